"""Bars, combos and book ladders end to end: the simulator -> the bridge (as ``run`` builds it) -> a real
Kafka-protocol broker and a real redis-server, subscribed from the config and over the admin API."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest_asyncio

from bridge.app import Bridge
from bridge.config import load_settings
from bridge.sim.server import GatewaySimulator
from tests.fixtures.brokers import StreamTail, consume_topic, create_topic, read_stream
from tests.fixtures.sim import FAST_CONFIG

COMBO = "28812380;;;265598/1,8314/-1"
COMBO_2 = "28812380;;;265598/1,8314/+2"  # same spread conid, same frames' _updated: must stay apart
BARS = "com.ibkr.marketdata.bars.v1"


@pytest_asyncio.fixture
async def live_sim() -> AsyncIterator[GatewaySimulator]:
    """The simulator with its defaults for bars (the live shape), updates every 0.2 s."""
    async with GatewaySimulator(dataclasses.replace(FAST_CONFIG, bars_update_s=0.2)) as simulator:
        yield simulator


def settings(sim: GatewaySimulator, tmp_path: Path, sink_url: str, names: dict[str, str], **subs: Any) -> Any:
    return load_settings(None, {
        "gateway": {"url": sim.origin, "insecure_tls": True},
        "session": {"stale_after_s": 5, "reconnect_floor_s": 0.05, "reconnect_cap_s": 0.3},
        "subscriptions": subs,
        "sink": {"url": sink_url, "kafka": {"enable_idempotence": False, "create_topics": True,
                                            "topic_partitions": 1}},
        "destinations": names,
        "delivery": {"spool_dir": str(tmp_path / "spool"), "linger_ms": 1},
        "admin": {"port": 0},
    })  # fmt: skip


async def run_until(bridge: Bridge, done: Callable[[], Any], timeout_s: float = 20.0) -> None:
    task = asyncio.create_task(bridge.run())
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while not await done():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.1)
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=15)


async def admin(bridge: Bridge, method: str, body: dict[str, Any]) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{bridge.admin_port}/subscriptions"
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


def check_live_bars(events: list[dict[str, Any]]) -> None:
    """A first answer timed from startTime + i * barLength, then partial tickNum updates as sent."""
    first = [e for e in events if not e["partial"]]
    partial = [e for e in events if e["partial"]]
    assert first and len(partial) >= 2
    answer = first[0]
    assert answer["bar_times"] == "derived" and answer["time_zone"] == "UTC" and answer["bar_length_s"] == 60
    assert [b["time_ms"] for b in answer["bars"]] == [answer["start_time_ms"] + i * 60_000
                                                     for i in range(len(answer["bars"]))]  # fmt: skip
    assert all(p["server_id"] == answer["server_id"] and p["bars"] == [] and p["partial_data"] for p in partial)
    ticks = [p["tick_num"] for p in partial]
    assert ticks == sorted(ticks) and ticks[0] == 1


BARS_SUBSCRIPTION = [{"conid": "265598", "period": "1h", "bar": "1min"}]


async def test_live_shape_bars_reach_kafka_timed_and_with_their_partial_updates(
    live_sim: GatewaySimulator, kafka_broker: str, tmp_path: Path
) -> None:
    topic = f"bars-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_broker, topic, 1)
    bridge = Bridge(settings(live_sim, tmp_path, f"kafka://{kafka_broker}", {"bars": topic}, bars=BARS_SUBSCRIPTION))
    seen: list[Any] = []

    async def enough() -> bool:
        seen[:] = await consume_topic(kafka_broker, topic, 4, timeout_s=1.0)
        return len(seen) >= 4

    await run_until(bridge, enough)
    assert {dict(r.headers)["ce_type"] for r in seen} == {BARS.encode()}
    assert {r.key for r in seen} == {b"265598"}
    check_live_bars([orjson.loads(r.value) for r in seen])


async def test_live_shape_bars_reach_redis_timed_and_with_their_partial_updates(
    live_sim: GatewaySimulator, redis_server: str, tmp_path: Path
) -> None:
    stream = f"bars-{uuid.uuid4().hex[:8]}"
    bridge = Bridge(settings(live_sim, tmp_path, redis_server, {"bars": stream}, bars=BARS_SUBSCRIPTION))
    seen: list[dict[bytes, bytes]] = []

    async def enough() -> bool:
        seen[:] = await read_stream(redis_server, stream, 4, timeout_s=0.5)
        return len(seen) >= 4

    await run_until(bridge, enough)
    assert {entry[b"type"] for entry in seen} == {BARS.encode()}
    check_live_bars([orjson.loads(entry[b"data"]) for entry in seen])


async def test_combos_and_book_ladders_from_config_and_admin_reach_their_destinations(
    live_sim: GatewaySimulator, redis_server: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = {"marketdata": f"md-{suffix}", "book": f"book-{suffix}"}
    bridge = Bridge(settings(live_sim, tmp_path, redis_server, names,
                             market_data={"conids": f"265598,{COMBO}"},  # the form of --market-data
                             book=[{"conid": "265598"}]))  # no account: the gateway's selected one  # fmt: skip
    answers: list[tuple[int, Any]] = []
    quote_tail, ladder_tail = StreamTail(redis_server, names["marketdata"]), StreamTail(redis_server, names["book"])
    quotes, ladders = quote_tail.entries, ladder_tail.entries
    subjects: set[bytes] = set()
    books: set[tuple[str, int]] = set()

    async def enough() -> bool:
        if not answers and bridge.session.usable:
            answers.append(await admin(bridge, "POST", {"type": "market_data", "conid": COMBO_2}))
            answers.append(await admin(bridge, "POST", {"type": "book", "conid": "8314", "account": "DU7654321"}))
        seen_quotes, seen_ladders = len(quotes), len(ladders)
        await quote_tail.read()
        await ladder_tail.read()
        subjects.update(q[b"subject"] for q in quotes[seen_quotes:])
        books.update((d["account"], d["conid"]) for d in (orjson.loads(e[b"data"]) for e in ladders[seen_ladders:]))
        if len(answers) == 2 and ("DU7654321", 8314) in books:  # a second ladder for that account
            answers.append(await admin(bridge, "POST", {"type": "book", "conid": "272093", "account": "DU7654321"}))
        wanted_books = {("DU1234567", 265598), ("DU7654321", 8314), ("DU7654321", 272093)}
        return {COMBO.encode(), COMBO_2.encode(), b"265598"} <= subjects and wanted_books <= books

    try:
        await run_until(bridge, enough)
    finally:
        await quote_tail.close()
        await ladder_tail.close()
    assert answers == [(200, {"subscribed": f"md:{COMBO_2}"}), (200, {"subscribed": "bd:DU7654321"}),
                       (200, {"subscribed": "bd:DU7654321", "replaced": "sbd+DU7654321+8314"})]  # fmt: skip
    listed = [s["key"] for s in bridge.admin.subscriptions() if s["channel"] == "bd"]
    assert sorted(listed) == ["bd:DU1234567", "bd:DU7654321"]  # one ladder per account
    combo_ids = [q[b"id"] for q in quotes if q[b"subject"] in (COMBO.encode(), COMBO_2.encode())]
    assert len(combo_ids) == len(set(combo_ids))  # the simulator stamps both combos with the same _updated
    for entry in quotes:
        data = orjson.loads(entry[b"data"])
        if entry[b"subject"] in (COMBO.encode(), COMBO_2.encode()):
            assert data["conid_ex"] == entry[b"subject"].decode() and data["conid"] == 28812380


async def test_a_sixth_bars_subscription_is_refused_over_admin_and_counted(
    live_sim: GatewaySimulator, tmp_path: Path
) -> None:
    bridge = Bridge(settings(live_sim, tmp_path, "memory://", {}))
    answers: list[tuple[int, Any]] = []

    open_smh: list[int] = []
    metrics: list[str] = []

    async def done() -> bool:
        if bridge.session.usable and not answers:
            for conid in (265598, 8314, 272093, 4815747, 76792991, 3691937):  # one request at a time
                answer = await admin(bridge, "POST", {"type": "bars", "conid": str(conid), "bar": "1h"})
                answers.append(answer)
            metrics.append(bridge.admin.render_metrics().decode())
            answers.append(await admin(bridge, "DELETE", {"key": answers[0][1]["subscribed"]}))
        open_smh[:] = [len(c["subscriptions"]["smh"]) for c in live_sim.gateway.stats()["connections"]]
        return bool(answers) and open_smh == [4]  # the DELETE released its stream with umh+<serverId>

    await run_until(bridge, done)
    assert [status for status, _ in answers] == [200] * 5 + [400, 200]
    assert "at most 5 historical-bars requests" in answers[5][1]["error"]
    assert 'ibkr_bridge_subscriptions_refused_total{reason="limit",topic="mh"} 1.0' in metrics[0]
