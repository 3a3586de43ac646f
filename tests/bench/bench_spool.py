"""Spool and delivery-path throughput.

Run: ``.venv/bin/python -m tests.bench.bench_spool [--dir DIR] [--events N]``

Prints, for each fsync policy, the append rate with one record per call (the worst
case: a spill of one record) and with 500-record chunks (what the buffer does when
memory overflows), the replay (read + decode) rate, the rate at which puts are absorbed
during an outage (market data conflating, critical records spilling), and the rate through
``DeliveryBuffer`` + ``Publisher`` into the in-memory sink (no broker: the cost of the
delivery core alone). Each figure is the median of 3 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bridge.codec import EnvelopeContext, encode
from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.spool import FSYNC_POLICIES, Spool
from bridge.events import Order, Quote
from bridge.publisher import Publisher
from bridge.routing import Router
from bridge.sinks.base import Record
from bridge.sinks.memory import MemorySink


def sample_records(count: int) -> list[Record]:
    router, ctx = Router(), EnvelopeContext()
    records = []
    for n in range(count):
        event = Order(
            account="U1234567",
            order_id=1_000 + n % 50,
            changed=("status", "filled_quantity"),
            reconciled=False,
            status="Submitted",
            conid=265598,
            symbol="AAPL",
            side="BUY",
            order_type="LMT",
            price=187.25,
            total_size=100.0,
            filled_quantity=float(n % 100),
        )
        route = router.route(event)
        assert route is not None
        records.append(encode(event, route, ctx, 1_700_000_000_000_000_000 + n))
    return records


def market_records(count: int) -> list[Record]:
    router, ctx = Router(), EnvelopeContext()
    records = []
    for n in range(count):
        event = Quote(
            conid=265598 + n % 200,
            conid_ex=None,
            updated_ms=1_700_000_000_000 + n,
            server_id="q0",
            snapshot=False,
            changed=("31", "84", "86"),
            values={"31": "187.25", "84": "187.24", "86": "187.26", "88": "1,200"},
        )
        route = router.route(event)
        assert route is not None
        records.append(encode(event, route, ctx, 1_700_000_000_000_000_000 + n))
    return records


CONFLATED: list[int] = []


def median_rate(run: Callable[[], tuple[int, float]]) -> float:
    rates = []
    for _ in range(3):
        events, seconds = run()
        rates.append(events / seconds)
    return statistics.median(rates)


def bench_append(base: Path, fsync: str, records: list[Record], chunk: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(dir=base) as directory:
        spool = Spool(directory, max_bytes=1 << 40, fsync=fsync)  # type: ignore[arg-type]
        started = time.perf_counter()
        for start in range(0, len(records), chunk):
            spool.append(records[start : start + chunk])
        spool.close()
        return len(records), time.perf_counter() - started


def bench_replay(base: Path, records: list[Record]) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(dir=base) as directory:
        spool = Spool(directory, max_bytes=1 << 40, fsync="never")
        spool.append(records)
        spool.close()
        reopened = Spool(directory, max_bytes=1 << 40, fsync="never")
        started = time.perf_counter()
        read = 0
        while reopened.has_unread():
            chunk, position = reopened.read(500)
            reopened.commit(position)
            read += len(chunk)
        return read, time.perf_counter() - started


async def _through_publisher(records: list[Record]) -> tuple[int, float]:
    sink = MemorySink()
    buffer = DeliveryBuffer(max_market_events=10_000, max_critical_events=10_000)
    publisher = Publisher(sink, buffer, max_batch_events=500, linger_ms=2)
    publisher.start()
    started = time.perf_counter()
    for start in range(0, len(records), 100):  # the gateway reader puts a frame's worth, then yields
        buffer.put_many(records[start : start + 100])
        await asyncio.sleep(0)
    await publisher.flush(timeout_s=120)
    elapsed = time.perf_counter() - started
    await publisher.stop()
    CONFLATED.append(buffer.market.conflated_events)
    return sink.count() + buffer.market.conflated_events, elapsed


def bench_outage_puts(base: Path, records: list[Record]) -> tuple[int, float]:
    """Records put while the sink is down: market data conflates, critical spills to the spool."""
    with tempfile.TemporaryDirectory(dir=base) as directory:
        spool = Spool(directory, max_bytes=1 << 40, fsync="interval_ms")
        buffer = DeliveryBuffer(max_market_events=1_000, max_critical_events=1_000, spool=spool)
        started = time.perf_counter()
        buffer.put_many(records)
        elapsed = time.perf_counter() - started
        assert len(buffer.market) <= 1_000 and buffer.critical_events <= 1_000
        spool.close()
        return len(records), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where spools go")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    records = sample_records(args.events)
    size = sum(len(r.data) for r in records) // len(records)
    print(f"{args.events} order records, data {size} B each, spools under {args.dir}")
    for fsync in FSYNC_POLICIES:
        single = records[: 2_000 if fsync == "always" else args.events]
        one = median_rate(lambda s=single, f=fsync: bench_append(args.dir, f, s, 1))  # type: ignore[misc]
        many = median_rate(lambda f=fsync: bench_append(args.dir, f, records, 500))  # type: ignore[misc]
        print(f"append fsync={fsync:<12} 1/call {one:>12,.0f} rec/s   500/call {many:>12,.0f} rec/s")
    print(
        f"replay (read+decode+commit)      {median_rate(lambda: bench_replay(args.dir, records)):>12,.0f} rec/s"
    )
    quotes = market_records(args.events * 4)
    mixed = [r for n, order in enumerate(records) for r in (*quotes[4 * n : 4 * n + 4], order)]
    absorb = median_rate(lambda: bench_outage_puts(args.dir, mixed))
    print(f"put during an outage (conflate + spill, bounded memory) {absorb:>12,.0f} rec/s")
    rate = median_rate(lambda: asyncio.run(_through_publisher(mixed)))
    print(
        f"buffer+publisher -> memory sink  {rate:>12,.0f} rec/s "
        f"(80% market data, no broker; {max(CONFLATED)} of {len(mixed)} conflated)"
    )


if __name__ == "__main__":
    main()
