"""Long fuzz run: hostile and mutated gateway frames through normalize -> route -> encode.

    .venv/bin/python -m tests.fuzz.fuzz_frames --frames 1000000 [--seed 1]

Not part of the test suite (it runs for minutes). Half the frames are recorded session frames
mutated (a value replaced by a hostile one, bytes flipped, cut short, a deep value inserted), half
built from nothing by ``tests.fuzz.hostile``. One normalizer serves the whole run, so a value kept
in merged state that a later frame cannot encode would show up as an exception. Prints the
frames, the exceptions (with the first few frames that raised, kept under ``--failures``), the
slowest frame (by this thread's CPU time: a frame preempted by other work on the machine does
not count as slow) and the events by type; exits 1 if anything raised.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

from bridge.codec import EnvelopeContext, encode
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.routing import Router
from tests.fuzz import hostile

SESSIONS = Path(__file__).parents[1] / "data" / "sessions"


def mutate(rng: random.Random, frame: bytes) -> bytes:
    roll = rng.random()
    if roll < 0.4:  # a value replaced by a hostile one
        colon = [i for i in range(len(frame)) if frame[i] == 58]  # ':'
        if colon:
            at = rng.choice(colon) + 1
            end = at
            while end < len(frame) and frame[end] not in b",}":
                end += 1
            return frame[:at] + hostile.value(rng).encode("utf-8", "surrogatepass") + frame[end:]
    if roll < 0.6:  # bytes flipped
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if roll < 0.7:  # cut short
        return frame[: rng.randrange(len(frame))]
    if roll < 0.85 and frame.endswith(b"}"):  # a deep or huge-integer field added
        extra = hostile.deep(rng, rng.choice([255, 300, 600, 1023])) if rng.random() < 0.6 else rng.choice(
            hostile.HOSTILE_SCALARS)
        return frame[:-1] + b',"' + rng.choice([b"7777", b"31", b"conid", b"_updated", b"x"]) + b'":' + \
            extra.encode("utf-8", "surrogatepass") + b"}"
    return frame


def run(frames: int, seed: int, failures_dir: Path | None) -> int:
    rng = random.Random(seed)
    real = [line for path in sorted(SESSIONS.glob("*.jsonl")) for line in path.read_bytes().splitlines() if line]
    normalizer, router, ctx = Normalizer(), Router(publish_internal=True), EnvelopeContext()
    exceptions: Counter[str] = Counter()
    events_by_type: Counter[str] = Counter()
    slowest_ns, slowest_frame, total_bytes = 0, b"", 0
    started = time.perf_counter()
    for number in range(frames):
        frame = mutate(rng, rng.choice(real)) if number % 2 == 0 else hostile.frame(rng)
        total_bytes += len(frame)
        begin = time.thread_time_ns()  # CPU time: a frame preempted by other work on the machine is not slow
        try:
            for event in normalizer.normalize(frame, 1_777_000_000_000_000_000 + number):
                route = router.route(event)
                assert route is not None
                encode(event, route, ctx, 1_777_000_000_000_000_000 + number)
                events_by_type[type(event).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - counting is the point
            exceptions[type(exc).__name__] += 1
            if failures_dir is not None and sum(exceptions.values()) <= 20:
                failures_dir.mkdir(parents=True, exist_ok=True)
                (failures_dir / f"frame-{number}.json").write_bytes(frame)
        elapsed = time.thread_time_ns() - begin
        if elapsed > slowest_ns:
            slowest_ns, slowest_frame = elapsed, frame
        if number % 20_000 == 0 and number:
            normalizer = Normalizer() if rng.random() < 0.1 else normalizer
    wall_s = time.perf_counter() - started
    print(f"frames: {frames:,} ({total_bytes / 2**20:,.1f} MiB) in {wall_s:,.1f} s ({frames / wall_s:,.0f} frames/s)")
    print(f"exceptions: {sum(exceptions.values()):,} {dict(exceptions)}")
    print(f"slowest frame: {slowest_ns / 1e6:.2f} ms of CPU, {len(slowest_frame):,} bytes: {slowest_frame[:80]!r}")
    print("events by type: " + ", ".join(f"{name} {count:,}" for name, count in events_by_type.most_common()))
    return 1 if exceptions else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--failures", type=Path, default=None, help="write the first frames that raised here")
    args = parser.parse_args()
    return run(args.frames, args.seed, args.failures)


if __name__ == "__main__":
    sys.exit(main())
