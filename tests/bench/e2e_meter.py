"""What every contender process of ``bench_e2e`` measures about itself, the same way.

A contender calls :meth:`Meter.acked` from wherever the broker's acknowledgement reaches it
(a delivery callback, an ack listener), with how many market-data frames that acknowledgement
covers and, at a fixed offered load, the simulator's send time of each (the frame's
``_updated``, in ms). A timer thread opens the measurement window ``warmup_s`` after the
first acknowledgement and closes it ``seconds`` later; between the two snapshots it takes the
acknowledged count, the process's CPU time (user + sys, every thread) and the wall clock.
:meth:`Meter.result` then gives frames/s, CPU seconds per 100,000 frames, latency percentiles
of the window and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def pin_self(cpu: int) -> None:
    """Pin this process (every thread it starts later inherits it) to ``cpu`` when there is one."""
    if (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ``ru_maxrss`` would carry the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runqueue_wait_s(pid: int | str = "self") -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (the second field of
    ``/proc/PID/task/TID/schedstat``), summed over its threads. A contender that waits here is
    starved by other work on the machine: its CPU figure is then low and its latency high, and
    neither is its own cost."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # a thread that ended meanwhile, or a kernel without schedstats
    return total_ns / 1e9


def core_busy_s() -> float:
    """Seconds the CPU this process is pinned to spent busy (everyone's work: user, nice, system,
    interrupts, steal), from ``/proc/stat``; 0.0 when it may run on more than one CPU."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) != 1:
        return 0.0
    name = f"cpu{next(iter(cpus))} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(name):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def percentile(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def contender_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every contender process takes from the benchmark driver."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ws-url", required=True)
    parser.add_argument("--bootstrap", required=True, help="Kafka host:port")
    parser.add_argument("--topic", required=True, help="Kafka topic for market data")
    parser.add_argument("--conids", required=True, help="comma-separated conids to subscribe")
    parser.add_argument("--fields", required=True, help="comma-separated market data field ids")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency", action="store_true", help="record frame-to-ack latency")
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    return parser


class Meter:
    """Counts acknowledged frames, samples latency in the window, snapshots CPU at its edges."""

    def __init__(self, warmup_s: float, seconds: float, latency: bool, marker: Path | None = None) -> None:
        self.warmup_s = warmup_s
        self.marker = marker  # touched when the window opens, so the driver can watch its peers
        self.seconds = seconds
        self.latency = latency
        self.acked_frames = 0
        self.acks = 0  # acknowledgements (a publish cycle for a batching contender, a frame otherwise)
        self.measuring = False
        self.done = threading.Event()
        self._first_ack = threading.Event()
        self._lags_ms = array("d")
        self._snapshots: list[tuple[int, float, float, int, float, float]] = []
        self._thread = threading.Thread(target=self._window, name="meter", daemon=True)
        self._thread.start()

    def acked(self, frames: int, ack_ms: float, sent_ms: Iterable[int] | None = None) -> None:
        """``frames`` market-data frames acknowledged at ``ack_ms`` (wall clock, ms)."""
        self.acked_frames += frames
        self.acks += 1
        if self.measuring and sent_ms is not None and self.latency:
            self._lags_ms.extend(ack_ms - sent for sent in sent_ms)
        if not self._first_ack.is_set():
            self._first_ack.set()

    def _snapshot(self) -> None:
        self._snapshots.append(
            (self.acked_frames, time.process_time(), time.perf_counter(), self.acks, runqueue_wait_s(), core_busy_s())
        )

    def _window(self) -> None:
        self._first_ack.wait()
        time.sleep(self.warmup_s)
        self._snapshot()
        self.measuring = True
        if self.marker is not None:
            self.marker.touch()
        time.sleep(self.seconds)
        self.measuring = False
        self._snapshot()
        self.done.set()

    def result(self, **extra: Any) -> dict[str, Any]:
        (n0, cpu0, t0, a0, w0, b0), (n1, cpu1, t1, a1, w1, b1) = self._snapshots
        frames, wall, cpu = n1 - n0, t1 - t0, cpu1 - cpu0
        lags = sorted(self._lags_ms)
        return {
            "frames": frames,
            "window_s": wall,
            "frames_per_s": frames / wall,
            "acks_per_s": (a1 - a0) / wall,
            "cpu_s": cpu,
            "cpu_percent": 100 * cpu / wall,
            "runq_wait_percent": 100 * (w1 - w0) / wall,
            # what else ran on the contender's core meanwhile (its own waits behind its own threads are
            # not starvation; waits while this is high are)
            "core_others_percent": max(0.0, 100 * ((b1 - b0) - cpu) / wall) if b1 else None,
            "cpu_s_per_100k": 1e5 * cpu / frames if frames else None,
            "frames_per_cpu_s": frames / cpu if cpu else None,
            "latency_samples": len(lags),
            "p50_ms": percentile(lags, 50),
            "p99_ms": percentile(lags, 99),
            "p999_ms": percentile(lags, 99.9),
            "max_ms": lags[-1] if lags else None,
            "peak_rss_mb": peak_rss_mb(),
            "acked_total": self.acked_frames,
            **extra,
        }


def write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)


def now_ms() -> float:
    return time.time_ns() / 1e6
