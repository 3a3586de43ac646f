"""Normalizer benchmark: JSON decode + normalize + route + event encode, one core.

A realistic mix: mostly sparse smd deltas for 200 conids (with an occasional
full snapshot), some order deltas and executions, PnL rows and heartbeats.

    .venv/bin/python -m tests.bench.bench_normalizer [--frames N] [--repeats R]

Prints frames/s per run and the median; writes bench-results/normalizer.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from pathlib import Path

import orjson

from bridge.codec import EnvelopeContext, encode
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.routing import Router


def build_frames(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    conids = [265598 + i * 17 for i in range(200)]
    prices = {c: rng.uniform(10, 500) for c in conids}
    frames: list[bytes] = []
    updated = 1_777_552_110_061
    order_id, execution = 900_000_000, 0
    frames.extend(  # first snapshots
        orjson.dumps({"topic": f"smd+{conid}", "conid": conid, "conidEx": str(conid),
                      "_updated": updated, "server_id": "q1", "6119": "q1", "6509": "RpB",
                      "31": f"{prices[conid]:.2f}", "84": f"{prices[conid] - 0.01:.2f}",
                      "86": f"{prices[conid] + 0.01:.2f}", "85": "1,300", "88": "500",
                      "7059": "100", "87": "24.2M", "83": 0.56})
        for conid in conids)  # fmt: skip
    while len(frames) < count:
        updated += rng.randint(0, 3)
        roll = rng.random()
        if roll < 0.90:
            conid = rng.choice(conids)
            prices[conid] += rng.uniform(-0.05, 0.05)
            fields = rng.sample(["31", "84", "86", "85", "88", "7059"], rng.randint(2, 4))
            values = {f: (f"{prices[conid]:.2f}" if f in ("31", "84", "86") else f"{rng.randint(1, 5000):,}")
                      for f in fields}  # fmt: skip
            frames.append(orjson.dumps({"server_id": "q1", "conidEx": str(conid), "conid": conid,
                                        "_updated": updated, "6119": "q1", "topic": f"smd+{conid}", **values}))
        elif roll < 0.95:
            order_id += rng.random() < 0.3
            filled = rng.randint(0, 100)
            frames.append(orjson.dumps({"topic": "sor", "args": [{"acct": "DU1234", "orderId": order_id,
                                        "sizeAndFills": f"{filled}/{100 - filled}", "filledQuantity": float(filled),
                                        "remainingQuantity": float(100 - filled), "status": "Submitted"}]}))
        elif roll < 0.97:
            execution += 1
            frames.append(orjson.dumps({"topic": "str", "args": [{"execution_id": f"0001.{execution}",
                                        "symbol": "AAPL", "side": "B", "size": 1.0, "price": "271.50",
                                        "order_id": order_id, "account": "DU1234", "trade_time_r": updated}]}))
        elif roll < 0.99:
            frames.append(orjson.dumps({"topic": "spl", "args": {"DU1234.Core": {"rowType": 1,
                                        "dpl": rng.uniform(-100, 100), "upl": rng.uniform(-100, 100)}}}))
        else:
            frames.append(orjson.dumps({"topic": "system", "hb": updated}))
    return frames


def run_once(frames: list[bytes]) -> float:
    normalizer, router, ctx = Normalizer(), Router(), EnvelopeContext()
    normalize, route = normalizer.normalize, router.route
    started = time.perf_counter()
    now_ns = time.time_ns()
    for frame in frames:
        for event in normalize(frame, now_ns):
            destination = route(event)
            if destination is not None:
                encode(event, destination, ctx, now_ns)
    return len(frames) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    frames = build_frames(args.frames)
    mean_bytes = sum(map(len, frames)) / len(frames)
    rates = [run_once(frames) for _ in range(args.repeats)]
    median = statistics.median(rates)
    for number, rate in enumerate(rates, start=1):
        print(f"run {number}: {rate:,.0f} frames/s")
    print(f"median: {median:,.0f} mixed frames/s on one core ({len(frames):,} frames, {mean_bytes:.0f} B mean)")
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "normalizer.json").write_bytes(orjson.dumps({
        "benchmark": "normalizer", "frames": len(frames), "mean_frame_bytes": round(mean_bytes),
        "runs_frames_per_s": [round(r) for r in rates], "median_frames_per_s": round(median),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
    }, option=orjson.OPT_INDENT_2))  # fmt: skip


if __name__ == "__main__":
    main()
