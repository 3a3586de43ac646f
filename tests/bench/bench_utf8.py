"""Cost of frames with invalid UTF-8, per MiB, against a valid frame of the same size.

Run: ``.venv/bin/python -m tests.bench.bench_utf8``

Each frame goes through ``Normalizer.normalize`` (what the bridge does per frame): a valid frame,
one with a stray 0x99 every 4 KiB (repaired as cp1252, up to the repair bound), and frames of
nothing but 0xFF (past the bound: dead-lettered without being decoded byte by byte). Each figure
is the median of 5 runs, in milliseconds per MiB of frame.
"""

from __future__ import annotations

import statistics
import time

from bridge.ingest.normalize.normalizer import Normalizer

HEAD, TAIL = b'{"topic":"ntf","args":[{"id":"N","text":"', b'","title":"T","url":""}]}'


def per_mib_ms(frame: bytes) -> float:
    runs = []
    for _ in range(5):
        normalizer = Normalizer()
        started = time.perf_counter()
        normalizer.normalize(frame, 1)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000 / (len(frame) / 2**20)


def main() -> None:
    for mib in (1, 4, 15.9):
        size = int(mib * 2**20)
        valid = HEAD + b"a" * size + TAIL
        stray = HEAD + (b"a" * 4095 + b"\x99") * (size // 4096) + TAIL
        invalid = HEAD + b"\xff" * size + TAIL
        figures = {name: per_mib_ms(frame) for name, frame in
                   (("valid", valid), ("stray 0x99 per 4 KiB", stray), ("all 0xFF", invalid))}  # fmt: skip
        print(f"{mib:>5} MiB: " + ", ".join(f"{name} {ms:.1f} ms/MiB" for name, ms in figures.items()))


if __name__ == "__main__":
    main()
