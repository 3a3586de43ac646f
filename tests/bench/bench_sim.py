"""Burst-mode throughput of the gateway simulator to a fast local reader in another process.

    .venv/bin/python -m tests.bench.bench_sim                # TLS (wss), flat out, 3 runs of 3 s
    .venv/bin/python -m tests.bench.bench_sim --no-tls --seconds 5 --runs 5 --conids 10

The simulator runs as ``python -m bridge.sim --rate N`` in its own process; this process is the
reader (``websockets``, no compression, payloads taken as bytes, every 1000th frame parsed).
Prints frames/s per run and the median. Target: >= 50,000 frames/s.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import time

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.fixtures.sim import start_sim_process

KNOWN_CONIDS = (265598, 8314, 272093, 4815747, 76792991, 3691937, 756733, 11004968)


async def read_burst(ws_url: str, conids: int, seconds: float, warmup_s: float = 0.5) -> float:
    """Subscribe ``conids`` instruments, then count smd frames for ``seconds``; frames/s."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context if ws_url.startswith("wss") else None
    async with connect(ws_url, ssl=tls, compression=None, max_size=None, max_queue=None) as ws:
        for index in range(conids):
            conid = KNOWN_CONIDS[index % len(KNOWN_CONIDS)] + index // len(KNOWN_CONIDS)
            await ws.send(f'smd+{conid}+{{"fields":["31","84","86","85","88","7059"]}}')
        deadline = time.monotonic() + warmup_s
        while time.monotonic() < deadline:
            await ws.recv(decode=False)
        count, start = 0, time.monotonic()
        end = start + seconds
        while True:
            data = await ws.recv(decode=False)
            count += 1
            if count % 1000 == 0:
                assert orjson.loads(data)["topic"].startswith(("smd+", "system", "sts", "act"))
                if time.monotonic() >= end:
                    break
        return count / (time.monotonic() - start)


def run(seconds: float, runs: int, conids: int, tls: bool, rate: float) -> list[float]:
    rates = []
    for _ in range(runs):
        args = ["--rate", str(rate)] + ([] if tls else ["--no-tls"])
        sim = start_sim_process(*args)
        try:
            rates.append(asyncio.run(read_burst(sim.ws_url, conids, seconds)))
        finally:
            sim.stop()
    return rates


@pytest.mark.bench
def test_burst_mode_throughput_is_reported() -> None:
    rates = run(seconds=2.0, runs=1, conids=2, tls=True, rate=10_000_000)
    print(f"burst mode, wss: {rates[0]:,.0f} frames/s")
    assert rates[0] > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_sim", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--conids", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10_000_000, help="offered frames/s (default: flat out)")
    parser.add_argument("--no-tls", action="store_true")
    args = parser.parse_args(argv)
    rates = run(args.seconds, args.runs, args.conids, not args.no_tls, args.rate)
    transport = "ws" if args.no_tls else "wss"
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"simulator burst mode over {transport}, {args.conids} conids: runs {runs} frames/s")
    print(f"median {statistics.median(rates):,.0f} frames/s (target >= 50,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
