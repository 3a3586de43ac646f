"""TLS verification is off only for a loopback gateway; elsewhere the bridge verifies the
gateway against ``gateway.ca_file``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.app import Bridge
from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.sim.config import SimConfig
from bridge.sim.server import GatewaySimulator
from bridge.sinks.memory import MemorySink
from tests.integration.test_app import eventually


@pytest.mark.parametrize("url", ["https://gateway.example.com:5000", "https://10.0.0.7:5000", "https://ibeam:5000"])
def test_insecure_tls_is_refused_for_a_gateway_off_loopback(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"gateway": {"url": url, "insecure_tls": True}})
    (problem,) = caught.value.problems
    assert problem.startswith("gateway.insecure_tls:") and "gateway.ca_file" in problem


@pytest.mark.parametrize("url", ["https://localhost:5000", "https://127.0.0.1:5000", "https://[::1]:5000"])
def test_insecure_tls_stays_allowed_for_the_loopback_gateway(url: str) -> None:
    assert load_settings(None, {"gateway": {"url": url, "insecure_tls": True}}).gateway.insecure_tls


def test_a_missing_ca_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"gateway": {"url": "https://ibeam:5000", "ca_file": str(tmp_path / "ca.pem")}})
    assert caught.value.problems[0].startswith("gateway.ca_file:")


async def streams(bridge: Bridge, sink: MemorySink, timeout_s: float = 10.0) -> bool:
    task = asyncio.create_task(bridge.run())
    try:
        await eventually(lambda: bool(sink.records.get("ibkr.marketdata.v1")), timeout_s=timeout_s)
        return True
    except AssertionError:
        return False
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)


def settings(url: str, tmp_path: Path, **gateway: object) -> object:
    return load_settings(None, {
        "gateway": {"url": url, **gateway},
        "subscriptions": {"market_data": {"conids": ["265598"]}},
        "sink": {"url": "memory://"},
        "delivery": {"spool_dir": str(tmp_path / "spool"), "linger_ms": 1},
        "admin": {"port": 0},
        "session": {"reconnect_floor_s": 0.05, "reconnect_cap_s": 0.2},
    })  # fmt: skip


async def test_a_gateway_elsewhere_is_verified_against_its_ca_file(tmp_path: Path) -> None:
    config = SimConfig(port=0, md_interval_s=0.1, heartbeat_s=0.5, tls_dir=tmp_path / "tls", tls_names=("ibeam",))
    async with GatewaySimulator(config) as sim:
        assert sim.cert_path is not None
        url = f"https://localhost:{sim.port}"
        sink = MemorySink()
        verified = Bridge(settings(url, tmp_path, ca_file=str(sim.cert_path)), sink=sink)  # type: ignore[arg-type]
        assert await streams(verified, sink)
        unverified_sink = MemorySink()
        refused = Bridge(settings(url, tmp_path / "b"), sink=unverified_sink)  # type: ignore[arg-type]
        assert not await streams(refused, unverified_sink, timeout_s=3)  # the system CAs do not vouch for it
