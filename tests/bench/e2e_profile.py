"""Where a contender's CPU goes, by stage: py-spy samples of the measurement window, summarized.

``bench_e2e --profile DIR`` runs ``py-spy record`` (``pip install py-spy``) against each contender
for the length of its window (non-blocking, so the contender is not paused, 250 samples/s, idle
samples left out) and writes ``DIR/<contender>.<load>.txt`` (py-spy's raw collapsed stacks) and
``DIR/<contender>.<load>.stages.json``. A sample counts for the stage of its innermost frame that
belongs to one (the table below, first match; asyncio's frames count for their caller, the loop
only for what nothing else called: select, timers); the rest is ``other``. The figures of a profiled
run are not for comparison: the sampler shares the peers' core.

    .venv/bin/python -m tests.bench.e2e_profile DIR/bridge-kafka.1k.txt ...   # print the stage tables
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLE_RATE = 250

# (stage, substrings of a frame "function (file:line)"), tried in order from the innermost frame out
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metrics", ("prometheus_client", "bridge/metrics.py", "delivery/observer.py")),
    ("logging", ("/logging/",)),
    ("aiokafka (produce requests, responses)", ("aiokafka/",)),
    ("redis-py", ("redis/",)),
    ("kafka sink (record batches)", ("bridge/sinks/kafka",)),
    ("redis sink", ("bridge/sinks/redis",)),
    ("publisher cycle", ("bridge/publisher.py",)),
    ("delivery buffer and spool", ("bridge/delivery/",)),
    ("route + encode (codec)", ("bridge/pipeline.py", "bridge/codec.py", "bridge/routing.py", "sinks/base.py")),
    ("normalize (ingest)", ("bridge/ingest/", "bridge/events.py")),
    ("gateway socket (TLS, websocket)", ("bridge/gateway/", "picows", "/ssl.py", "sslproto.py")),
    ("bridge app loop", ("bridge/app.py",)),
    ("meter (benchmark)", ("tests/bench/",)),
    ("event loop (select, timers, callbacks)", ("asyncio/", "selectors.py", "uvloop")),
)


# the loop calling a callback: asyncio's dispatch frames; uvloop calls callbacks from C, right under
# the ``Runner.run`` frame (a sample with nothing under it is uvloop's own work)
_DISPATCH = ("Handle._run ", "_run_once ", "BaseEventLoop._run_once ", "Runner.run (asyncio/runners.py")


def start_profiler(pid: int, seconds: float, out_dir: Path, name: str) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate",
            str(SAMPLE_RATE), "--gil", "--nonblocking", "--format", "raw", "--output", str(out_dir / f"{name}.txt")]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_profiler(proc: subprocess.Popen[bytes], out_dir: Path, name: str) -> dict[str, float] | None:
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    raw = out_dir / f"{name}.txt"
    if not raw.exists():
        return None
    stages = stage_shares(raw)
    (out_dir / f"{name}.stages.json").write_text(json.dumps(stages, indent=2))
    return stages


def stage_of(stack: list[str]) -> str:
    """The stage of the innermost frame that has one, among the frames the event loop called
    (what runs the loop, ``asyncio.run`` and the contender's ``main``, does not count); asyncio's
    own frames count for the code that called them (a future set by aiokafka is aiokafka's), the
    loop only when nothing else: select, timers, the loop's own bookkeeping."""
    *work, (loop_stage, _) = STAGES
    dispatch = [i for i, frame in enumerate(stack) if frame.startswith(_DISPATCH)]
    frames = stack[dispatch[-1] + 1 :] if dispatch else stack
    for frame in reversed(frames):
        for stage, needles in work:
            if any(needle in frame for needle in needles):
                return stage
    return loop_stage if dispatch else "other"


def stage_shares(raw: Path) -> dict[str, float]:
    """Percent of the samples per stage (py-spy raw: ``frame;frame;...;innermost count`` per line)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    return {stage: round(100 * n / total, 1) for stage, n in counts.most_common()} | {"samples": total}


def main(paths: list[str]) -> int:
    for path in paths:
        print(path)
        for stage, share in stage_shares(Path(path)).items():
            print(f"  {share:>7}{'' if stage == 'samples' else ' %'}  {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
