"""``ibkr-bridge demo`` end to end: simulator, embedded broker, bridge, a dropped socket, a summary."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time


def test_demo_publishes_to_every_main_destination_and_recovers_one_reconnect() -> None:
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "demo", "--duration", "8"],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.stdout[result.stdout.rindex("summary after"):]
    assert "into kafka" in summary  # the embedded Kafka-protocol broker, not a fallback
    counts = {m.group(1): int(m.group(2).replace(",", "")) for m in re.finditer(r"(ibkr\.\S+)\s+([\d,]+) events", summary)}
    for destination in ("ibkr.marketdata.v1", "ibkr.orders.v1", "ibkr.executions.v1", "ibkr.bridge.v1"):
        assert counts.get(destination, 0) > 0, f"nothing published to {destination}: {summary}"
    assert "reconnects recovered: 1" in summary
    # What a user needs to look for themselves: the broker, the admin address and the tail command.
    head = result.stdout.splitlines()[0]
    broker = re.search(r"broker (kafka://127\.0\.0\.1:\d+)", head)
    assert broker and f"ibkr-bridge tail --sink {broker.group(1)}" in head and "admin http://127.0.0.1:" in head
    # Without a terminal: plain progress lines (not only the last frame, not wrapped at 80 columns).
    progress = [line for line in result.stdout.splitlines() if "frames/s" in line]
    rates = [int(m.group(1).replace(",", "")) for m in (re.search(r"frames/s ([\d,]+)", line) for line in progress) if m]
    assert rates and max(rates) > 0, progress
    assert any("gateway socket dropped at" in line and "reconnected" in line for line in progress), progress
    frames = re.search(r"gateway frames\s+([\d,]+) sent", summary)
    assert frames and int(frames.group(1).replace(",", "")) > 0


def test_a_run_time_that_is_not_positive_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "demo", "--duration", "-5"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2 and "must be more than 0 seconds" in result.stderr
    assert "summary" not in result.stdout


def test_ctrl_c_ends_a_kept_demo_cleanly_with_the_broker_still_up() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "demo", "--keep"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the addresses line: the bridge is up
        assert "broker kafka://" in first
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert "summary after" in out
    for noise in ("Unable connect", "Future exception was never retrieved", "Traceback"):
        assert noise not in err and noise not in out, err[-2000:]
