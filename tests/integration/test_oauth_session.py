"""The bridge in OAuth mode, in one event loop with the simulator's OAuth mode: the brokerage
session is opened with ssodh/init even when it first answers 500, and reopened with ssodh/init
after an auth loss (there is no gateway that could log in again by itself)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest_asyncio

from bridge.app import Bridge
from bridge.config import load_settings
from bridge.sim.server import GatewaySimulator
from bridge.sinks.memory import MemorySink
from tests.fixtures.sim import FAST_CONFIG
from tests.integration.test_app import eventually


def oauth_settings(sim: GatewaySimulator, tmp_path: Path) -> Any:
    return load_settings(None, {
        "gateway": {"mode": "oauth", "url": sim.origin, "oauth_file": str(sim.oauth_file),
                    "ca_file": str(sim.cert_file)},
        "session": {"stale_after_s": 3, "reconnect_floor_s": 0.05, "reconnect_cap_s": 0.3, "auth_poll_s": 0.2,
                    "tickle_interval_s": 0.5},
        "subscriptions": {"market_data": {"conids": ["265598"]}, "orders": True},
        "sink": {"url": "memory://"},
        "delivery": {"spool_dir": str(tmp_path / "spool"), "linger_ms": 1},
        "admin": {"port": 0},
    })  # fmt: skip


@pytest_asyncio.fixture
async def oauth_sim(tmp_path: Path) -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(replace(FAST_CONFIG, oauth_dir=tmp_path / "keys")) as simulator:
        yield simulator


@pytest_asyncio.fixture
async def bridge_factory(tmp_path: Path) -> AsyncIterator[Any]:
    running: list[tuple[Bridge, asyncio.Task[None]]] = []

    def start(sim: GatewaySimulator) -> tuple[Bridge, MemorySink]:
        sink = MemorySink()
        bridge = Bridge(oauth_settings(sim, tmp_path), sink=sink)
        running.append((bridge, asyncio.create_task(bridge.run())))
        return bridge, sink

    yield start
    for bridge, task in running:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)


def lifecycle(sink: MemorySink) -> list[tuple[str, str]]:
    events = [orjson.loads(r.data) for r in sink.records["ibkr.bridge.v1"]]
    return [(e.get("kind"), e.get("reason")) for e in events]


def quotes(sink: MemorySink) -> int:
    return len(sink.records["ibkr.marketdata.v1"])


async def test_ssodh_init_answering_500_is_retried_until_the_brokerage_session_opens(
    oauth_sim: GatewaySimulator, bridge_factory: Any
) -> None:
    await oauth_sim.apply_fault("ssodh_error", count=2)
    bridge, sink = bridge_factory(oauth_sim)
    await eventually(lambda: bridge.session.usable and quotes(sink) > 0)
    assert oauth_sim.gateway.ssodh_errors == 0 and oauth_sim.gateway.brokerage_open
    assert bridge.connection.connect_attempts >= 3  # two refused starts, then the session


async def test_after_an_auth_loss_the_brokerage_session_is_reopened_with_ssodh_init(
    oauth_sim: GatewaySimulator, bridge_factory: Any
) -> None:
    bridge, sink = bridge_factory(oauth_sim)
    await eventually(lambda: bridge.session.usable and quotes(sink) > 0)
    await oauth_sim.apply_fault("auth_loss")  # no duration: only ssodh/init (or reauthenticate) ends it
    await eventually(lambda: ("gap_end", "authenticated false") in lifecycle(sink), timeout_s=15)
    assert ("unauthenticated", "authenticated false") in lifecycle(sink)
    before = quotes(sink)
    await eventually(lambda: quotes(sink) > before)
    assert oauth_sim.gateway.authenticated
