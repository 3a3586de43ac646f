"""Memory per buffered quote: what the market-data buffer costs while the sink is down.

Run: ``.venv/bin/python -m tests.bench.bench_buffer_memory [--records 50000] [--conids 1000]``

Quotes for ``--conids`` conids carrying every default field (``DEFAULT_MARKET_DATA_FIELDS``) are
normalized and encoded as the bridge does, and ``--records`` of them are put in a
``MarketDataQueue`` large enough to hold them all (the worst case: no conflation yet). Prints the
bytes per buffered quote (tracemalloc: Python allocations the queue keeps alive; RSS: the
process's resident growth) and the record's data size, for the chart's buffer arithmetic
(``tests/integration/test_helm_chart.py``).
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from pathlib import Path

import orjson

from bridge.codec import EnvelopeContext
from bridge.delivery.market_queue import MarketDataQueue
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.pipeline import Pipeline
from bridge.routing import Router
from bridge.sinks.base import Record


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def quote_records(count: int, conids: int, start: int = 0) -> list[Record]:
    normalizer, pipeline = Normalizer(), Pipeline(Router(), EnvelopeContext())
    records: list[Record] = []
    for n in range(start, start + count):
        conid = 100_000 + n % conids
        frame = {"topic": f"smd+{conid}", "conid": conid, "_updated": 1_777_000_000_000 + n,
                 "31": f"{190 + n % 97 / 100:.2f}", "84": "189.99", "85": "1,200", "86": "190.01", "88": "900",
                 "7059": "100", "87": "12.3M", "7762": "4.1M", "70": "191.20", "71": "188.75", "7295": "189.10",
                 "7741": "188.40", "82": "+1.20", "83": "+0.64%", "6509": "RpB", "55": "AAPL",
                 "server_id": "q0", "conidEx": str(conid)}  # fmt: skip
        records.extend(pipeline.records(normalizer.normalize(orjson.dumps(frame), n), n))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--conids", type=int, default=1_000)
    args = parser.parse_args()
    gc.collect()
    tracemalloc.start()
    before_py, before_rss = tracemalloc.get_traced_memory()[0], rss_kb()
    queue = MarketDataQueue(args.records + 1)
    for start in range(0, args.records, 100):  # as frames arrive: a batch at a time
        queue.put_many(quote_records(min(100, args.records - start), args.conids, start))
    gc.collect()
    after_py, after_rss = tracemalloc.get_traced_memory()[0], rss_kb()
    tracemalloc.stop()
    sample = queue.take(1)[0]
    data = len(sample.data)
    per_py = (after_py - before_py) / args.records
    per_rss = (after_rss - before_rss) * 1024 / args.records
    print(f"{args.records:,} buffered quotes for {args.conids:,} conids: {per_py:,.0f} bytes each (Python "
          f"allocations), {per_rss:,.0f} bytes each (RSS, tracemalloc's own bookkeeping included); "
          f"data {data} bytes")


if __name__ == "__main__":
    main()
