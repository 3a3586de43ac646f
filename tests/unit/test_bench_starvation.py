"""The end-to-end benchmark tells a starved contender from a cheap one (run-queue wait per window)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.bench.e2e_meter import runqueue_wait_s
from tests.bench.e2e_report import STARVED_WAIT_PERCENT, print_table

_SPIN = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass\n"


def test_two_busy_processes_on_one_cpu_each_wait_for_it() -> None:
    cpu = min(os.sched_getaffinity(0))
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(2)]
    try:
        for proc in procs:
            os.sched_setaffinity(proc.pid, {cpu})
        time.sleep(0.6)  # both spinning on one CPU: each is runnable about half of this waiting
        waits = [runqueue_wait_s(proc.pid) for proc in procs]
    finally:
        for proc in procs:
            proc.wait(10)
    assert all(wait > 0.1 for wait in waits), waits


def test_an_idle_process_waits_for_no_cpu() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; print(flush=True); time.sleep(1.0)"],
                            stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # started (however long that took on a busy machine), now asleep
        before = runqueue_wait_s(proc.pid)
        time.sleep(0.3)
        assert runqueue_wait_s(proc.pid) - before < 0.05  # asleep: never runnable, never waiting
    finally:
        proc.communicate(timeout=10)


@pytest.mark.parametrize(
    ("wait", "others", "marked"),
    [
        (STARVED_WAIT_PERCENT + 1, STARVED_WAIT_PERCENT + 1, True),  # waited while other work had its core
        (60.0, 1.0, False),  # waited behind its own threads: the core ran nothing else
        (1.0, 50.0, False),  # others used the core's idle time: no harm done
    ],
)
def test_a_starved_row_is_marked(wait: float, others: float, marked: bool, capsys: pytest.CaptureFixture[str]) -> None:
    row = {"contender": "bridge/kafka", "load": "5k", "frames_per_s": 4700.0, "acks_per_s": 30.0,
           "cpu_percent": 30.0, "cpu_s_per_100k": 6.4, "frames_per_cpu_s": 15000.0, "p50_ms": 55.0,
           "p99_ms": 460.0, "p999_ms": 670.0, "peak_rss_mb": 100.0, "loadavg_1m": 3.6,
           "peer_cpu_percent": {"sim": 15.0, "tansu": 4.0, "redis": 0.0}, "verified": True,
           "runq_wait_percent": wait, "core_others_percent": others}  # fmt: skip
    print_table({"rows": [row], "ratios": {}, "paced": {}})
    assert ("STARVED" in capsys.readouterr().out) is marked
