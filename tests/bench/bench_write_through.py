"""What writing critical records through to the spool costs, against keeping them in memory.

Run: ``.venv/bin/python -m tests.bench.bench_write_through [--dir DIR] [--events N] [--per-put K]``

Order records go through ``DeliveryBuffer`` + ``Publisher`` into the in-memory sink (no broker:
the delivery core alone), the way the gateway reader puts them: ``--per-put`` records per put (a
``sor`` frame's worth), then a yield to the loop. Contenders, run in turns in one process:

- ``memory``: no spool; critical records wait in memory only (what the bridge did below
  ``max_critical_events`` before write-through: a SIGKILL loses them);
- ``write-through interval_ms``: every put appended and flushed to the OS before the publisher can
  take it, fsync at most every 200 ms (the default), the position committed on each ack;
- ``write-through always``: the same with an fsync per put.

For each: records per second (wall clock) and CPU microseconds per record (process time), the
median of ``--rounds`` runs, and how many publish cycles (acks) the run took. Writes
bench-results/write_through.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.spool import Spool
from bridge.publisher import Publisher
from bridge.sinks.base import Record
from bridge.sinks.memory import MemorySink
from tests.bench.bench_spool import sample_records


@dataclass
class Run:
    events: int
    wall_s: float
    cpu_s: float
    cycles: int


class CountingSink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.cycles = 0

    async def publish(self, records: list[Record]) -> None:  # type: ignore[override]
        self.cycles += 1
        await super().publish(records)


async def _through(records: list[Record], spool: Spool | None, per_put: int) -> Run:
    sink = CountingSink()
    buffer = DeliveryBuffer(max_market_events=10_000, max_critical_events=100_000, spool=spool)
    publisher = Publisher(sink, buffer, max_batch_events=2_000, linger_ms=5)
    publisher.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(records), per_put):
        buffer.put_many(records[start : start + per_put])
        await asyncio.sleep(0)
    await publisher.flush(timeout_s=300)
    run = Run(sink.count(), time.perf_counter() - wall, time.process_time() - cpu, sink.cycles)
    await publisher.stop()
    return run


def one_run(base: Path, fsync: str | None, records: list[Record], per_put: int) -> Run:
    if fsync is None:
        return asyncio.run(_through(records, None, per_put))
    with tempfile.TemporaryDirectory(dir=base) as directory:
        spool = Spool(directory, max_bytes=1 << 40, fsync=fsync)  # type: ignore[arg-type]
        try:
            return asyncio.run(_through(records, spool, per_put))
        finally:
            spool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where spools go")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--per-put", type=int, default=1, help="records per put (a frame's worth)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = sample_records(args.events)
    size = sum(len(r.data) for r in records) // len(records)
    print(f"{args.events} order records of {size} B, {args.per_put} per put, spools under {args.dir} "
          f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    contenders: dict[str, str | None] = {
        "memory (no spool)": None,
        "write-through interval_ms": "interval_ms",
        "write-through always": "always",
    }
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, fsync in contenders.items():
            runs[name].append(one_run(args.dir, fsync, records, args.per_put))
    results = []
    for name, done in runs.items():
        assert all(run.events == args.events for run in done), f"{name}: records missing"
        rate = statistics.median(run.events / run.wall_s for run in done)
        cpu_us = statistics.median(run.cpu_s / run.events * 1e6 for run in done)
        cycles = statistics.median(run.cycles for run in done)
        print(f"{name:<28} {rate:>10,.0f} rec/s   {cpu_us:>7.1f} CPU-us/rec   {cycles:>7,.0f} publish cycles")
        results.append({"contender": name, "records_per_s": round(rate), "cpu_us_per_record": round(cpu_us, 1),
                        "publish_cycles": cycles})  # fmt: skip
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "write_through.json").write_bytes(orjson.dumps({
        "benchmark": "write_through", "records": args.events, "per_put": args.per_put, "rounds": args.rounds,
        "record_bytes": size, "load_average": os.getloadavg()[0], "results": results,
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }, option=orjson.OPT_INDENT_2))  # fmt: skip


if __name__ == "__main__":
    main()
