"""A hostile frame from the gateway never takes a running bridge down: the simulator sends the
frames that once made ``run`` exit 1, and the bridge keeps serving the same conid."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from bridge.app import Bridge
from bridge.events import Quote
from bridge.sim.server import GatewaySimulator
from bridge.sinks.memory import MemorySink
from tests.integration.test_app import eventually, settings_for

DEEP = "[" * 600 + "1" + "]" * 600
HOSTILE = [
    f'{{"topic":"smd+265598","conid":265598,"31":"1.00","7777":{DEEP}}}',
    '{"topic":"smd+777777","conid":777777,"31":"1.00"}',  # a target nobody subscribed
    '{"topic":"smd+123456789012345678901234567890","31":"1.00"}',
    '{"topic":"ssd+DU1","result":[{"key":"NetLiquidation","timestamp":-9223372036854775807,"monetaryValue":1}]}',
]


async def test_hostile_frames_from_the_gateway_leave_the_bridge_running(sim: GatewaySimulator, tmp_path: Path) -> None:
    sink = MemorySink()
    bridge = Bridge(settings_for(sim, tmp_path), sink=sink)
    task = asyncio.create_task(bridge.run())
    try:
        await eventually(lambda: bridge.session.usable and bool(sink.records.get("ibkr.marketdata.v1")))
        for frame in HOSTILE:
            await sim.apply_fault("malformed", kind="raw", frame=frame)
        await eventually(lambda: len(sink.records.get("ibkr.dlq.v1", [])) >= 1)
        seen = len(sink.records["ibkr.marketdata.v1"])
        await eventually(lambda: len(sink.records["ibkr.marketdata.v1"]) > seen + 5)  # 265598 keeps streaming
        assert not task.done()
        quotes = [orjson.loads(r.data) for r in sink.records["ibkr.marketdata.v1"] if r.key == b"265598"]
        flagged = [q for q in quotes if "7777" in q["extra"]]
        assert flagged and flagged[-1]["extra"]["7777"]["truncated"] is True
        letters = [orjson.loads(r.data) for r in sink.records["ibkr.dlq.v1"]]
        assert any("exceeds 64 bits" in (d.get("error") or "") for d in letters)
        assert any(d["reason"] == "unsubscribed_target" for d in letters)
        assert bridge.normalizer.quote_states == 2  # 265598 and 8314, the subscribed conids
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)
    assert task.exception() is None


async def test_an_event_the_encoder_refuses_becomes_a_dead_letter_and_drops_the_quote_state(
    sim: GatewaySimulator, tmp_path: Path
) -> None:
    sink = MemorySink()
    bridge = Bridge(settings_for(sim, tmp_path), sink=sink)
    bridge.normalizer.expect_snapshot("265598")  # as the session does when it sends the smd
    bridge.normalizer.normalize(b'{"topic":"smd+265598","conid":265598,"31":"1.00"}', 1)
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    quote = Quote(265598, None, 1, None, False, ("x",), {}, extra={"x": deep})
    await bridge.on_events([quote], 1_000_000)  # raised out of the event path before
    (record,) = bridge.buffer.take(10).critical
    letter = orjson.loads(record.data)
    assert record.destination == "ibkr.dlq.v1" and letter["stage"] == "encode" and letter["reason"] == "unencodable"
    assert "Recursion" in letter["error"]
    (fresh,) = bridge.normalizer.normalize(b'{"topic":"smd+265598","conid":265598,"84":"1.00"}', 2)
    assert isinstance(fresh, Quote) and fresh.snapshot  # the state was dropped: it starts afresh
    bridge.spool.close()
