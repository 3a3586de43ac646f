"""``gateway.session`` / ``BRIDGE_GATEWAY__SESSION`` / ``gateway.session_file``: the session id the
bridge presents instead of the one ``/tickle`` returns, as the upgrade's ``api`` cookie and as the
``{"session": ...}`` message when the gateway answers "waiting for session"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.app import Bridge
from bridge.sim.server import GatewaySimulator
from bridge.sinks.memory import MemorySink
from tests.fixtures.sim import FAST_CONFIG
from tests.integration.test_app import eventually, settings_for


@pytest_asyncio.fixture
async def strict_sim() -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(replace(FAST_CONFIG, require_session=True)) as simulator:
        yield simulator


async def _run(bridge: Bridge) -> asyncio.Task[None]:
    return asyncio.create_task(bridge.run())


async def test_a_session_from_the_environment_is_sent_as_cookie_and_as_the_session_message(
    strict_sim: GatewaySimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_GATEWAY__SESSION", "override-session-1")
    bridge = Bridge(settings_for(strict_sim, tmp_path), sink=MemorySink())
    task = await _run(bridge)
    try:
        await eventually(lambda: ("message", "override-session-1") in strict_sim.gateway.sessions_presented)
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)
    assert strict_sim.gateway.sessions_presented[0] == ("cookie", "override-session-1")
    assert not bridge.session.usable  # the simulator's session is another one: it keeps waiting


async def test_a_session_from_a_file_opens_the_session_the_gateway_expects(
    strict_sim: GatewaySimulator, tmp_path: Path
) -> None:
    session_file = tmp_path / "session"
    session_file.write_text(strict_sim.gateway.session_id + "\n")
    settings = settings_for(strict_sim, tmp_path, gateway={"url": strict_sim.origin, "insecure_tls": True,
                                                           "session_file": str(session_file)})  # fmt: skip
    sink = MemorySink()
    bridge = Bridge(settings, sink=sink)
    task = await _run(bridge)
    try:
        await eventually(lambda: bridge.session.usable)
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)
    assert strict_sim.gateway.sessions_presented[0] == ("cookie", strict_sim.gateway.session_id)
