"""Burst mode (``--rate``) with many targets subscribed one at a time, as a client that paces its
subscriptions does: each target's pre-encoded frames are built once, not again at every later
subscription (which stalled the simulator for seconds at 100 targets)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.sim import connection
from bridge.sim.server import GatewaySimulator
from tests.fixtures.sim import FAST_CONFIG

TARGETS = [str(100_000 + 37 * i) for i in range(6)]


async def test_each_targets_burst_frames_are_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = connection.burst_templates

    def counting(target: str, *args: Any) -> list[tuple[bytes, bytes]]:
        built.append(target)
        return real(target, *args)

    monkeypatch.setattr(connection, "burst_templates", counting)
    config = replace(FAST_CONFIG, rate=2_000.0, tls=False)
    async with GatewaySimulator(config) as sim, aiohttp.ClientSession() as http, http.ws_connect(sim.ws_url) as ws:
        for target in TARGETS:
            await ws.send_str(f'smd+{target}+{{"fields":["31","84","86"]}}')
            seen = 0
            while seen < 3:  # the two snapshots, then a burst frame: the ring includes this target
                message = await ws.receive(timeout=30)
                assert message.type is aiohttp.WSMsgType.TEXT
                seen += orjson.loads(message.data).get("topic") == f"smd+{target}"
    assert sorted(built) == sorted(TARGETS)
