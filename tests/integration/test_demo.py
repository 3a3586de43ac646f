"""``ibkr-bridge demo`` end to end: simulator, embedded broker, bridge, a dropped socket, a summary."""

from __future__ import annotations

import re
import subprocess
import sys


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
