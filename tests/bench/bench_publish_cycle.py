"""What one publish cycle costs when frames trickle: CPU per ``publish`` of a few records.

    .venv/bin/python -m tests.bench.bench_publish_cycle            # ~1 minute
    .venv/bin/python -m tests.bench.bench_publish_cycle --cycles 2000

At paced rates the bridge publishes on a cadence (``delivery.linger_ms``, at most 200 cycles a
second at the default 5 ms), each cycle carrying a handful of records over a few partitions; the
fixed cost of a cycle then decides what a trickle of market data costs. This measures it for 1, 6
and 30 records per cycle (market-data-heavy records, 6 partitions, one cycle at a time, each
awaited to its acknowledgement as the publisher does), side by side in one run:

- ``bridge kafka zstd`` / ``bridge kafka none``: :class:`~bridge.sinks.kafka.KafkaSink` as the
  bridge runs it without idempotence (its own record batches, one hand-built ProduceRequest per
  broker per cycle: ``kafka_produce.DirectProducer``);
- ``bridge kafka sender``: the same sink and batches through aiokafka's accumulator and sender
  (``send_batch``, ``kafka_produce.SenderProducer``), the path an idempotent sink takes, zstd;
- ``aiokafka send``: aiokafka's own per-record path for the same records (``send`` per record, then
  every future awaited), no compression: what a plain aiokafka producer pays;
- ``bridge redis``: :class:`~bridge.sinks.redis.RedisSink` (pipelined XADD).

This process is pinned to CPU 0, the brokers to CPU 1; figures are CPU microseconds of this
process per cycle (user + sys) and the wall time per cycle. Results go to
``bench-results/publish_cycle.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bridge.sinks.base import Record
from bridge.sinks.kafka import ProducePath
from tests.bench.bench_sinks import brokers, build_records, kafka_sink, pin, redis_sink
from tests.fixtures.brokers import create_topic

RESULTS = Path("bench-results/publish_cycle.json")
PARTITIONS = 6
SIZES = (1, 6, 30)

Publish = Callable[[Sequence[Record]], Awaitable[None]]


async def _kafka_sink(
    address: str, compression: str, path: ProducePath | None = None
) -> tuple[Publish, Callable[[], Awaitable[None]]]:
    sink = kafka_sink(address, compression, path=path)
    await sink.start()
    return sink.publish, sink.close


async def _aiokafka(address: str, _redis: str) -> tuple[Publish, Callable[[], Awaitable[None]]]:
    producer = AIOKafkaProducer(bootstrap_servers=address, enable_idempotence=False, linger_ms=0, acks="all")
    await producer.start()

    async def publish(records: Sequence[Record]) -> None:
        futures = [await producer.send(r.destination, r.data, key=r.key) for r in records]
        await asyncio.gather(*futures)

    return publish, producer.stop


async def _redis_sink(_address: str, redis_url: str) -> tuple[Publish, Callable[[], Awaitable[None]]]:
    sink = redis_sink(redis_url, maxlen=100_000)
    await sink.start()
    return sink.publish, sink.close


CONTENDERS: dict[str, Callable[[str, str], Awaitable[tuple[Publish, Callable[[], Awaitable[None]]]]]] = {
    "bridge kafka zstd": lambda a, _r: _kafka_sink(a, "zstd"),
    "bridge kafka none": lambda a, _r: _kafka_sink(a, "none"),
    "bridge kafka sender": lambda a, _r: _kafka_sink(a, "zstd", "sender"),
    "aiokafka send": _aiokafka,
    "bridge redis": _redis_sink,
}


async def measure(name: str, address: str, redis_url: str, size: int, cycles: int) -> dict[str, Any]:
    prefix = f"cycle.{name.replace(' ', '-')}.{size}.{time.monotonic_ns()}"
    needed = (cycles + 50) * size  # quotes only (90 % of the mix): one topic, keyed by conid
    records = [
        r for r in build_records(needed * 12 // 10 + 100, prefix) if r.destination.endswith("marketdata.v1")
    ]
    if "kafka" in name:
        await create_topic(address, records[0].destination, PARTITIONS)
    publish, close = await CONTENDERS[name](address, redis_url)
    try:
        for i in range(50):  # warm up: connections, metadata, caches
            await publish(records[i * size : (i + 1) * size])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(50, 50 + cycles):
            await publish(records[i * size : (i + 1) * size])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await close()
    return {"contender": name, "records_per_cycle": size, "cycles": cycles,
            "cpu_us_per_cycle": 1e6 * cpu / cycles, "wall_us_per_cycle": 1e6 * wall / cycles,
            "cpu_us_per_record": 1e6 * cpu / (cycles * size)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_publish_cycle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--cycles", type=int, default=1000, help="measured cycles per contender and size")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    pin(os.getpid(), 0)
    rows: list[dict[str, Any]] = []
    print(
        f"{'contender':<19} {'records':>7} {'CPU µs/cycle':>12} {'wall µs/cycle':>13} {'CPU µs/record':>13}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp, brokers(Path(tmp)) as (kafka, redis):
        for size in SIZES:
            for name in CONTENDERS:  # contenders alternate within each size: the same minute of the machine
                row = asyncio.run(measure(name, kafka.address, redis.address, size, args.cycles))
                rows.append(row)
                print(f"{name:<19} {size:>7} {row['cpu_us_per_cycle']:>12,.0f} {row['wall_us_per_cycle']:>13,.0f} "
                      f"{row['cpu_us_per_record']:>13,.0f}", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"cpu_model": _cpu_model(), "loadavg": os.getloadavg(), "rows": rows}, indent=2)
    )
    print(f"results written to {args.out}")
    return 0


def _cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")


if __name__ == "__main__":
    raise SystemExit(main())
