"""The whole bridge (composition root, admin HTTP, metrics) against the simulator, into the memory sink."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import GC_THRESHOLDS, Bridge
from bridge.config import load_settings
from bridge.sim.server import GatewaySimulator
from bridge.sinks.memory import MemorySink


def settings_for(sim: GatewaySimulator, tmp_path: Path, **extra: Any) -> Any:
    overrides: dict[str, Any] = {
        "gateway": {"url": sim.origin, "insecure_tls": True},
        "session": {"stale_after_s": 3, "reconnect_floor_s": 0.05, "reconnect_cap_s": 0.3, "auth_poll_s": 0.2},
        "subscriptions": {"market_data": {"conids": ["265598", "8314"]}, "orders": True, "executions": True,
                          "pnl": True},
        "sink": {"url": "memory://"},
        "delivery": {"spool_dir": str(tmp_path / "spool"), "linger_ms": 1},
        "admin": {"port": 0},
    }
    overrides.update(extra)
    return load_settings(None, overrides)


@pytest.fixture
async def running(sim: GatewaySimulator, tmp_path: Path) -> AsyncIterator[tuple[Bridge, MemorySink]]:
    sink = MemorySink()
    bridge = Bridge(settings_for(sim, tmp_path), sink=sink)
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge, sink
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def get(bridge: Bridge, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{bridge.admin_port}{path}") as resp:
        body = await (resp.json() if resp.content_type == "application/json" else resp.text())
        return resp.status, body


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def keys(sink: MemorySink, destination: str) -> set[bytes]:
    return {record.key for record in sink.records.get(destination, [])}


async def test_quotes_for_every_configured_conid_reach_the_sink_keyed_by_conid(running: tuple[Bridge, MemorySink]) -> None:
    bridge, sink = running
    await eventually(lambda: {b"265598", b"8314"} <= keys(sink, "ibkr.marketdata.v1"))
    status, body = await get(bridge, "/readyz")
    assert status == 200 and body["ready"] is True


async def test_readyz_follows_an_auth_loss_and_its_recovery(running: tuple[Bridge, MemorySink], sim: GatewaySimulator) -> None:
    bridge, _ = running
    await eventually(lambda: bridge.session.usable)
    await sim.apply_fault("auth_loss", duration_s=1.0)
    await eventually(lambda: not bridge.session.usable, timeout_s=5)
    status, body = await get(bridge, "/readyz")
    assert status == 503 and body["checks"]["gateway_authenticated"] is False
    await eventually(lambda: bridge.session.usable, timeout_s=10)
    assert (await get(bridge, "/readyz"))[0] == 200


async def test_the_competing_gauge_stays_up_for_the_whole_competing_session(
    running: tuple[Bridge, MemorySink], sim: GatewaySimulator
) -> None:
    bridge, _ = running
    await eventually(lambda: bridge.session.usable)
    await sim.apply_fault("competing", duration_s=6.0)  # long enough to sample on a loaded machine
    await eventually(lambda: not bridge.session.usable, timeout_s=5)
    samples = []
    while not bridge.session.usable:  # polled like a scrape, until the session recovers
        text = (await get(bridge, "/metrics"))[1]
        samples.append((metric(text, "ibkr_bridge_gateway_competing"), metric(text, "ibkr_bridge_gateway_authenticated")))
        await asyncio.sleep(0.2)
    if samples[-1] == (0.0, 1.0):  # caught mid-recovery: authenticated again, the socket not yet resubscribed
        samples.pop()
    assert len(samples) >= 3 and set(samples) == {(1.0, 0.0)}  # competing never drops while unauthenticated
    await eventually(lambda: metric(bridge.admin.render_metrics().decode(), "ibkr_bridge_gateway_competing") == 0)


async def test_a_silent_subscription_counts_as_stale_and_holds_a_gap_open_until_data_comes(
    sim: GatewaySimulator, tmp_path: Path
) -> None:
    settings = settings_for(sim, tmp_path, session={"stale_after_s": 30, "expected_cadence_s": {"md": 0.5}})
    bridge = Bridge(settings, sink=MemorySink())
    task = asyncio.create_task(bridge.run())
    try:
        await eventually(lambda: bridge.session.usable)
        await eventually(lambda: metric(bridge.admin.render_metrics().decode(), "ibkr_bridge_frames_received_total",
                                        topic="smd") > 0)  # fmt: skip
        await sim.apply_fault("silence", topics=["smd"])

        def silent() -> bool:
            text = bridge.admin.render_metrics().decode()
            return metric(text, "ibkr_bridge_stale_subscriptions", topic="md") == 2

        await eventually(silent, timeout_s=5)
        text = bridge.admin.render_metrics().decode()
        assert metric(text, "ibkr_bridge_gap_open") == 1
        assert metric(text, "ibkr_bridge_gaps_total", reason="silent") == 1
        assert bridge.session.usable  # the socket itself is fine: no reconnect
        await sim.apply_fault("clear")
        await eventually(lambda: metric(bridge.admin.render_metrics().decode(), "ibkr_bridge_gap_open") == 0, timeout_s=5)
        assert metric(bridge.admin.render_metrics().decode(), "ibkr_bridge_stale_subscriptions", topic="md") == 0
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)


async def test_a_drop_moves_disconnects_resubscribes_and_gaps(running: tuple[Bridge, MemorySink], sim: GatewaySimulator) -> None:
    bridge, sink = running
    await eventually(lambda: bridge.session.usable and b"265598" in keys(sink, "ibkr.marketdata.v1"))
    before = (await get(bridge, "/metrics"))[1]
    await sim.apply_fault("drop")
    await eventually(lambda: bridge.session.session_epoch >= 2, timeout_s=10)
    await eventually(lambda: len(sink.records.get("ibkr.marketdata.v1", [])) > 0)
    after = (await get(bridge, "/metrics"))[1]
    for name in ("ibkr_bridge_gateway_disconnects_total", "ibkr_bridge_resubscribes_total", "ibkr_bridge_gaps_total"):
        assert metric(after, name) > metric(before, name), name
    lifecycle = [r for r in sink.records.get("ibkr.bridge.v1", []) if dict(r.attributes)["type"] == "com.ibkr.bridge.lifecycle.v1"]
    kinds = [r.data for r in lifecycle]
    assert any(b'"gap_start"' in k for k in kinds) and any(b'"gap_end"' in k for k in kinds)


async def test_a_sink_outage_raises_buffer_depth_and_publish_errors(running: tuple[Bridge, MemorySink]) -> None:
    bridge, sink = running
    await eventually(lambda: b"265598" in keys(sink, "ibkr.marketdata.v1"))
    sink.down = True
    await asyncio.sleep(1.0)
    text = (await get(bridge, "/metrics"))[1]
    assert metric(text, "ibkr_bridge_publish_errors_total") > 0
    assert metric(text, "ibkr_bridge_buffer_events") > 0
    assert (await get(bridge, "/readyz"))[1]["checks"]["sink_up"] is False
    sink.down = False
    await eventually(lambda: bridge.publisher.sink_up, timeout_s=10)


async def test_every_documented_metric_is_exported_after_a_short_run(running: tuple[Bridge, MemorySink]) -> None:
    bridge, sink = running
    await eventually(lambda: b"265598" in keys(sink, "ibkr.marketdata.v1"))
    text = (await get(bridge, "/metrics"))[1]
    families = {line.split(" ")[2].removesuffix("_total") for line in text.splitlines() if line.startswith("# TYPE ")}
    registered = {family.name for family in bridge.metrics.registry.collect()}
    assert not sorted(registered - families), "registered metric families missing from /metrics"
    documented = ["gateway_authenticated", "gateway_competing", "gateway_connected", "session_epoch",
                  "gateway_connects", "gateway_disconnects", "frames_received", "received_bytes",
                  "last_frame_timestamp_seconds", "heartbeat_age_seconds", "subscriptions", "resubscribes",
                  "stale_subscriptions", "events_normalized", "normalize_errors", "gaps", "reconciled_events",
                  "events_published", "publish_errors", "publish_duration_seconds", "event_lag_seconds",
                  "buffer_events", "buffer_capacity_events", "conflated_events", "dropped_events", "spool_bytes",
                  "spool_segments", "dead_letter_events", "build_info"]
    missing = [name for name in documented if f"ibkr_bridge_{name}" not in families]
    assert not missing, f"documented metrics not exported: {missing}"
    assert metric(text, "ibkr_bridge_subscriptions", state="desired") == 5
    assert metric(text, "ibkr_bridge_frames_received_total", topic="smd") > 0
    assert metric(text, "ibkr_bridge_events_published_total") > 0
    assert metric(text, "ibkr_bridge_gateway_authenticated") == 1


async def test_subscriptions_can_be_added_and_removed_at_run_time(running: tuple[Bridge, MemorySink]) -> None:
    bridge, sink = running
    await eventually(lambda: bridge.session.usable)
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{bridge.admin_port}/subscriptions"
        async with http.post(url, json={"type": "market_data", "conid": "272093"}) as resp:
            assert resp.status == 200
        await eventually(lambda: b"272093" in keys(sink, "ibkr.marketdata.v1"))
        async with http.delete(url, json={"key": "md:272093"}) as resp:
            assert resp.status == 200
        async with http.get(url) as resp:
            listed = [s["key"] for s in (await resp.json())["subscriptions"]]
        assert "md:272093" not in listed and "md:265598" in listed
        async with http.post(url, json={"type": "bogus"}) as resp:
            assert resp.status == 400


async def test_every_metric_the_dashboards_and_alerts_use_is_scraped_from_a_running_bridge(
    running: tuple[Bridge, MemorySink],
) -> None:
    from tests.unit.test_dashboards import (
        alert_expressions,
        dashboard_expressions,
        load_dashboard,
        undefined_metrics,
    )  # fmt: skip

    bridge, sink = running
    await eventually(lambda: b"265598" in keys(sink, "ibkr.marketdata.v1"))
    text = (await get(bridge, "/metrics"))[1]
    scraped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split(" ")[2:4]
            suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("", "_total")}.get(kind, ("",))
            scraped.update(name.removesuffix("_total") + s if kind == "counter" else name + s for s in suffixes)
    expressions = {**dashboard_expressions(load_dashboard()), **alert_expressions()}
    missing = undefined_metrics(expressions, frozenset(scraped))
    assert not missing, f"dashboard/alert expressions use metrics the running bridge does not export: {missing}"


async def test_collector_runs_rarely_while_serving_and_is_restored_after(sim: GatewaySimulator, tmp_path: Path) -> None:
    before = gc.get_threshold()
    bridge = Bridge(settings_for(sim, tmp_path), sink=MemorySink())
    task = asyncio.create_task(bridge.run())
    await eventually(lambda: bridge.connection.ready)
    assert gc.get_threshold() == GC_THRESHOLDS != before
    bridge.stop()
    await asyncio.wait_for(task, timeout=15)
    assert gc.get_threshold() == before
