"""A gateway that floods pings and never reads our socket: the bridge's memory stays bounded
(pongs are not queued without limit) and the bridge keeps running; the socket is dropped when
the peer stops reading for long enough. Real simulator and bridge processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.fault.harness import BridgeProcess
from tests.fixtures.sim import SimProcess

FLOOD_S = 14.0  # past the 10 s the bridge allows a peer that does not read


def test_a_ping_flood_from_a_peer_that_never_reads_leaves_memory_bounded(
    sim_process: SimProcess, bridge_process: Callable[..., BridgeProcess], tmp_path: Path
) -> None:
    config = {
        "gateway": {"url": sim_process.origin, "insecure_tls": True},
        "session": {"reconnect_floor_s": 0.2, "reconnect_cap_s": 1.0},
        "subscriptions": {"market_data": {"conids": ["265598"]}},
        "sink": {"url": "memory://"},
        "delivery": {"spool_dir": str(tmp_path / "spool")},
        "logging": {"level": "INFO", "format": "text"},
    }
    bridge = bridge_process(config)
    bridge.start()
    deadline = time.monotonic() + 30
    while bridge.metric("ibkr_bridge_gateway_connected") != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    baseline_kb = bridge.rss_kb()
    sim_process.apply_fault("ping_flood", duration_s=FLOOD_S, pings_per_tick=2000)
    time.sleep(FLOOD_S + 2)
    assert bridge.running, bridge.log()[-2000:]
    growth_mb = (bridge.peak_rss_kb - baseline_kb) / 1024
    print(f"RSS before the flood {baseline_kb / 1024:.0f} MB, peak {bridge.peak_rss_kb / 1024:.0f} MB")
    assert growth_mb < 100, f"RSS grew {growth_mb:.0f} MB under the ping flood"
    assert "unsent for" in bridge.log()  # the socket was dropped as the peer kept not reading
