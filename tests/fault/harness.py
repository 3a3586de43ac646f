"""Running the real bridge against the simulator and a Kafka-protocol broker, and checking what came out.

- :func:`bridge_config`: a YAML config for ``ibkr-bridge run`` (Kafka sink, idempotence off).
- :class:`BridgeProcess`: ``python -m bridge.cli run --config FILE`` as a subprocess; SIGKILL,
  SIGTERM, restart with the same config (and so the same spool), ``/metrics``, RSS from ``/proc``.
- :class:`TopicReader`: a consumer in its own thread reading every partition of the bridge's
  topics from the beginning, continuously (the test broker is memory-only and its end offsets
  run short, so records are counted as they arrive).
- :class:`OrderFlow`: places market orders through the simulator's REST API at a steady pace.

What came out is compared with the simulator's record in :mod:`tests.fault.record_check`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.fixtures.processes import free_port, wait_for_port
from tests.fixtures.sim import SimProcess

ROOT = Path(__file__).resolve().parents[2]

MARKET_DATA = "ibkr.marketdata.v1"
ORDERS = "ibkr.orders.v1"
EXECUTIONS = "ibkr.executions.v1"
LIFECYCLE = "ibkr.bridge.v1"
PNL = "ibkr.pnl.v1"
TOPICS = (MARKET_DATA, ORDERS, EXECUTIONS, LIFECYCLE, PNL)
LIFECYCLE_TYPE = "com.ibkr.bridge.lifecycle.v1"

# --------------------------------------------------------------------------- the bridge process


def bridge_config(
    sim: SimProcess,
    bootstrap: str,
    spool_dir: Path,
    conids: Iterable[int],
    *,
    session: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    kafka: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Settings for ``ibkr-bridge run``: every topic the checks need, fast session timers."""
    return {
        "gateway": {"url": sim.origin, "insecure_tls": True},
        "session": {
            "stale_after_s": 5,
            "reconnect_floor_s": 0.2,
            "reconnect_cap_s": 1.0,
            "healthy_reset_s": 5,
            "auth_poll_s": 0.5,
            **(session or {}),
        },
        "subscriptions": {
            "market_data": {"conids": [str(c) for c in conids]},
            "orders": True,
            "executions": True,
            "pnl": True,
        },
        "sink": {
            "url": f"kafka://{bootstrap}",
            "kafka": {
                "enable_idempotence": False,  # the test broker refuses idempotent producers
                "create_topics": True,
                "topic_partitions": 3,
                "request_timeout_ms": 5_000,
                **(kafka or {}),
            },
        },
        "delivery": {"spool_dir": str(spool_dir), "linger_ms": 2, **(delivery or {})},
        "admin": {"host": "127.0.0.1", "port": 0},
        "logging": {"level": "INFO", "format": "text"},
    }


def read_status_kb(pid: int, name: str) -> int:
    """A ``VmRSS`` / ``VmHWM`` line of ``/proc/<pid>/status`` in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class BridgeProcess:
    """One bridge configuration; ``start()`` runs it, ``kill()`` / ``stop()`` end it, ``start()`` again
    restarts it with the same config and spool directory. Tracks the peak RSS over every run."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = workdir / "bridge.yaml"
        self.log_path = workdir / "bridge.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.runs = 0
        self.peak_rss_kb = 0
        self.exit_codes: list[int] = []
        self._sampler: threading.Thread | None = None
        self._sampling = threading.Event()

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the bridge is already running"
        self.admin_port = free_port()
        config = {**self.config, "admin": {"host": "127.0.0.1", "port": self.admin_port}}
        self.config_path.write_text(yaml.safe_dump(config))
        self.runs += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== run {self.runs} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            )
        try:
            wait_for_port(self.admin_port, self.proc, timeout_s=30)
        except (RuntimeError, TimeoutError) as exc:
            if self.proc.poll() is not None:
                self.exit_codes.append(self.proc.returncode)
            raise AssertionError(
                f"the bridge did not start (run {self.runs}): {exc}\n{self.log()[-2500:]}"
            ) from exc
        self._start_sampler()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no spool flush, no goodbye."""
        assert self.proc is not None
        self._note_peak()
        self.proc.send_signal(signal.SIGKILL)
        self.exit_codes.append(self.proc.wait(10))

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for the drain; the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self._note_peak()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.exit_codes.append(code)
        return code

    def close(self) -> None:
        self.stop()
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout=2)

    # ------------------------------------------------------------------ observing

    def rss_kb(self) -> int:
        return read_status_kb(self.pid, "VmRSS") if self.running else 0

    def _note_peak(self) -> None:
        if self.running:
            self.peak_rss_kb = max(self.peak_rss_kb, read_status_kb(self.pid, "VmHWM"))

    def _start_sampler(self) -> None:
        if self._sampler is not None and self._sampler.is_alive():
            return

        def sample() -> None:
            while not self._sampling.wait(0.1):
                if self.running:
                    self._note_peak()

        self._sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        self._sampler.start()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` (all label sets)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# --------------------------------------------------------------------------- consuming


@dataclass(frozen=True, slots=True)
class Consumed:
    """One record read back: where it was, its CloudEvents headers and its JSON body."""

    topic: str
    partition: int
    offset: int
    key: str
    headers: dict[str, str]
    data: dict[str, Any]
    read_at_s: float  # wall clock when the consumer got it

    @property
    def id(self) -> str:
        return self.headers.get("ce_id", "")

    @property
    def type(self) -> str:
        return self.headers.get("ce_type", "")


class TopicReader:
    """Reads every partition of ``topics`` from the start, in a thread, until ``close()``."""

    def __init__(self, bootstrap: str, topics: Iterable[str] = TOPICS) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self._records: list[Consumed] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="topic-reader", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start once the topics exist (the bridge creates them)."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"topics {self.topics} did not appear on {self.bootstrap}")
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def records(self, topic: str | None = None) -> list[Consumed]:
        with self._lock:
            return [r for r in self._records if topic is None or r.topic == topic]

    def wait_for(self, check: Callable[[TopicReader], bool], timeout_s: float) -> bool:
        """Poll ``check`` until it holds; False when ``timeout_s`` ran out (the caller asserts)."""
        deadline = time.monotonic() + timeout_s
        while not check(self):
            if time.monotonic() > deadline or self._error is not None:
                return False
            time.sleep(0.1)
        return True

    def lifecycle(self, *kinds: str) -> list[Consumed]:
        return [
            r
            for r in self.records(LIFECYCLE)
            if r.type == LIFECYCLE_TYPE and (not kinds or r.data.get("kind") in kinds)
        ]

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # noqa: BLE001 - reported to the test through start()/wait_for()
            self._error = exc
            self._ready.set()

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=10_000
        )
        await consumer.start()
        try:
            tps: list[Any] = []
            deadline = time.monotonic() + 30
            for topic in self.topics:
                while not consumer.partitions_for_topic(topic):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"topic {topic} has no partitions")
                    await consumer.topics()
                    await asyncio.sleep(0.2)
                tps += [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._ready.set()
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                now = time.time()
                got = [_consumed(m, now) for records in batches.values() for m in records]
                if got:
                    with self._lock:
                        self._records.extend(got)
        finally:
            await consumer.stop()


def _consumed(message: Any, now: float) -> Consumed:
    headers = {name: value.decode(errors="replace") for name, value in message.headers or ()}
    try:
        data = orjson.loads(message.value)
    except orjson.JSONDecodeError:
        data = {}
    return Consumed(
        message.topic,
        message.partition,
        message.offset,
        (message.key or b"").decode(),
        headers,
        data if isinstance(data, dict) else {},
        now,
    )


# --------------------------------------------------------------------------- orders


class OrderFlow:
    """Places market orders (BUY/SELL alternating over ``conids``) every ``interval_s`` in a thread."""

    def __init__(self, sim: SimProcess, conids: Iterable[int], interval_s: float = 0.25) -> None:
        self.sim = sim
        self.conids = tuple(conids)
        self.interval_s = interval_s
        self.placed: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="order-flow", daemon=True)

    def __enter__(self) -> OrderFlow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            conid = self.conids[n % len(self.conids)]
            side = "BUY" if n % 2 == 0 else "SELL"
            n += 1
            try:
                self.placed.append(self.sim.place_order(conid=conid, side=side, quantity=3))
            except Exception as exc:  # noqa: BLE001 - a refused placement (e.g. during auth loss) is noted
                self.failures.append(f"{type(exc).__name__}: {exc}")


def wait_until_settled(sim: SimProcess, placed: Iterable[int], timeout_s: float = 30.0) -> bool:
    """Every placed order reached a terminal status in the simulator."""
    wanted = set(placed)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        orders = {o["orderId"]: o for o in sim.record()["orders"]}
        if all(orders.get(i, {}).get("status") in ("Filled", "Cancelled") for i in wanted):
            return True
        time.sleep(0.2)
    return False
