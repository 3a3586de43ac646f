"""The current state on start: a consumer that starts mid-stream bootstraps from the state
destinations, follows on, and ends holding exactly the live state; on the real Kafka-protocol
broker and a real redis-server, with the whole bridge reading the simulator.

The live state is computed independently: the latest event per key folded from the whole stream,
read from its first record.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bridge.app import Bridge
from bridge.config import Settings, load_settings
from bridge.routing import DEFAULT_DESTINATIONS
from bridge.sinks.base import Record
from tests.fixtures.sim import SimProcess

State = dict[str, str]  # key -> CloudEvents id of the key's latest event


def settings_for(sim: SimProcess, tmp_path: Path, sink: dict[str, Any], prefix: str, **state: Any) -> Settings:
    return load_settings(None, {
        "gateway": {"url": sim.origin, "insecure_tls": True},
        "session": {"stale_after_s": 5, "reconnect_floor_s": 0.05, "reconnect_cap_s": 0.3, "auth_poll_s": 0.2},
        "subscriptions": {"market_data": {"conids": ["265598", "8314", "4815747"]}, "orders": True, "executions": True,
                          "pnl": True},
        "sink": sink,
        "destinations": {family: f"{prefix}.{name.removeprefix('ibkr.')}" for family, name in DEFAULT_DESTINATIONS.items()},
        "delivery": {"spool_dir": str(tmp_path / "spool"), "linger_ms": 1},
        **({"state": state} if state else {}),
        "admin": {"port": 0},
    })  # fmt: skip


class Acked:
    """What the bridge had acknowledged, per destination (ack listener)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.tombstones: list[Record] = []

    def __call__(self, records: Sequence[Record], ack_ns: int) -> None:
        for record in records:
            self.counts[record.destination] += 1
            if not record.data:
                self.tombstones.append(record)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Bridge, Acked]]:
    bridge = Bridge(settings)
    acked = Acked()
    bridge.add_ack_listener(acked)
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge, acked
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=20)


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not met in time: {what}")
        await asyncio.sleep(0.05)


async def place_orders(sim: SimProcess) -> list[int]:
    """Two market orders (they fill) and one limit order far from the market (it stays open)."""
    return [
        await asyncio.to_thread(sim.place_order, 265598, "BUY", 3),
        await asyncio.to_thread(sim.place_order, 8314, "SELL", 2),
        await asyncio.to_thread(sim.place_order, 265598, "BUY", 1, "LMT", 1.0),
    ]


def fold(records: Sequence[tuple[str, str | None, bytes | None]]) -> State:
    """Latest event id per key of ``(key, id, value)`` records; a record without a value deletes."""
    state: State = {}
    for key, event_id, value in records:
        if value:
            assert event_id is not None
            state[key] = event_id
        else:
            state.pop(key, None)
    return state


# --------------------------------------------------------------------------- Kafka


class KafkaReader:
    """Reads a topic from its first record on, in the background, keeping ``(key, id, value)``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[tuple[str, str | None, bytes | None]] = []
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                          enable_auto_commit=False, metadata_max_age_ms=500)  # fmt: skip
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaReader:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        async for message in self._consumer:
            headers = {name: value.decode() for name, value in message.headers}
            self.records.append((message.key.decode(), headers.get("ce_id"), message.value))

    def state(self) -> State:
        return fold(self.records)


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    (resource,) = response.resources
    return {entry[0]: entry[1] for entry in resource[4]}


def kafka_sink(broker: str) -> dict[str, Any]:
    return {"url": f"kafka://{broker}",
            "kafka": {"enable_idempotence": False, "create_topics": True, "topic_partitions": 3}}  # fmt: skip


async def test_a_kafka_consumer_started_mid_stream_bootstraps_from_the_state_topics_and_ends_holding_the_live_state(
    kafka_broker: str, sim_process: SimProcess, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = settings_for(sim_process, tmp_path, kafka_sink(kafka_broker), prefix)
    families = ("marketdata", "orders")
    async with contextlib.AsyncExitStack() as readers:
        async with running(settings) as (_bridge, acked):
            await eventually(lambda: acked.counts[f"{prefix}.marketdata.v1"] >= 20, "quotes published")
            streams = {f: await readers.enter_async_context(KafkaReader(kafka_broker, f"{prefix}.{f}.v1"))
                       for f in families}  # fmt: skip
            await place_orders(sim_process)
            await eventually(lambda: acked.counts[f"{prefix}.orders.v1"] >= 6, "order states published")
            # mid-stream: quotes and orders already published, more to come
            followers = {f: await readers.enter_async_context(KafkaReader(kafka_broker, f"{prefix}.state.{f}.v1"))
                         for f in families}  # fmt: skip
            await place_orders(sim_process)
            published = acked.counts[f"{prefix}.orders.v1"]
            await eventually(lambda: acked.counts[f"{prefix}.orders.v1"] >= published + 6, "more order states")
            await asyncio.sleep(0.5)  # quotes keep flowing while the consumer follows
        # the bridge has drained and stopped: everything it published is acknowledged
        for family in families:
            stream, follower = streams[family], followers[family]
            total = acked.counts[f"{prefix}.{family}.v1"]
            await eventually(lambda s=stream, n=total: len(s.records) >= n, f"{family} stream read")  # type: ignore[misc]
            await eventually(lambda f=follower, n=total: len(f.records) >= n, f"{family} state read")  # type: ignore[misc]
            live = stream.state()
            assert len(live) >= (3 if family == "marketdata" else 6)
            assert follower.state() == live
    orders_live = streams["orders"].state()
    assert len({event_id.split(":")[2] for event_id in orders_live.values()} & {"Filled", "Submitted"}) == 2
    for family in families:
        config = await topic_config(kafka_broker, f"{prefix}.state.{family}.v1")
        assert config.get("cleanup.policy") == "compact"


# --------------------------------------------------------------------------- Redis


async def redis_snapshot(client: Any, hash_name: str, stream: str) -> tuple[State, str]:
    """The bootstrap: the hash and the stream's last entry id, read together (MULTI/EXEC)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(hash_name)
        pipe.xrevrange(stream, "+", "-", count=1)
        fields, last = await pipe.execute()
    state = {key.decode(): orjson.loads(value)["event"]["id"] for key, value in fields.items()}
    return state, last[0][0].decode() if last else "0-0"


class RedisFollower:
    """Bootstraps from the state hash, then follows the stream after the snapshot's last id."""

    def __init__(self, url: str, hash_name: str, stream: str) -> None:
        self._client = aioredis.Redis.from_url(url)
        self._hash, self._stream = hash_name, stream
        self.bootstrapped: State = {}
        self.state: State = {}
        self.followed = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedisFollower:
        self.bootstrapped, cursor = await redis_snapshot(self._client, self._hash, self._stream)
        self.state = dict(self.bootstrapped)
        self._task = asyncio.create_task(self._follow(cursor))
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._client.aclose()

    async def _follow(self, cursor: str) -> None:
        while True:
            for _stream, entries in await self._client.xread({self._stream: cursor}, block=200, count=500):
                for entry_id, fields in entries:
                    cursor = entry_id.decode()
                    self.state[fields[b"key"].decode()] = fields[b"id"].decode()
                    self.followed += 1


async def stream_state(url: str, stream: str) -> tuple[State, int]:
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange(stream)
    finally:
        await client.aclose()
    return fold([(f[b"key"].decode(), f[b"id"].decode(), f[b"data"]) for _, f in entries]), len(entries)


async def test_a_redis_consumer_started_mid_stream_bootstraps_from_the_state_hashes_and_ends_holding_the_live_state(
    redis_server: str, sim_process: SimProcess, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = settings_for(sim_process, tmp_path, {"url": redis_server}, prefix)
    families = ("marketdata", "orders")
    async with contextlib.AsyncExitStack() as readers:
        async with running(settings) as (_bridge, acked):
            await eventually(lambda: acked.counts[f"{prefix}.marketdata.v1"] >= 20, "quotes published")
            await place_orders(sim_process)
            await eventually(lambda: acked.counts[f"{prefix}.orders.v1"] >= 6, "order states published")
            # mid-stream: quotes and orders already published, more to come
            followers = {f: await readers.enter_async_context(
                RedisFollower(redis_server, f"{prefix}.state.{f}.v1", f"{prefix}.{f}.v1")) for f in families}
            assert all(follower.bootstrapped for follower in followers.values())
            await place_orders(sim_process)
            published = acked.counts[f"{prefix}.orders.v1"]
            await eventually(lambda: acked.counts[f"{prefix}.orders.v1"] >= published + 6, "more order states")
            await asyncio.sleep(0.5)  # quotes keep flowing while the consumer follows
        client = aioredis.Redis.from_url(redis_server)
        try:
            for family in families:
                live, _ = await stream_state(redis_server, f"{prefix}.{family}.v1")
                follower = followers[family]
                await eventually(lambda f=follower, s=live: f.state == s, f"{family} follower holds the live state")  # type: ignore[misc]
                assert follower.followed > 0
                final_hash = await client.hgetall(f"{prefix}.state.{family}.v1")
                assert {k.decode(): orjson.loads(v)["event"]["id"] for k, v in final_hash.items()} == live
                assert len(live) >= (3 if family == "marketdata" else 6)
        finally:
            await client.aclose()


async def test_a_redis_state_entry_names_its_stream_entry_and_carries_the_whole_event(
    redis_server: str, sim_process: SimProcess, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = settings_for(sim_process, tmp_path, {"url": redis_server}, prefix)
    async with running(settings) as (_bridge, acked):
        await eventually(lambda: acked.counts[f"{prefix}.marketdata.v1"] >= 5, "quotes published")
    client = aioredis.Redis.from_url(redis_server)
    try:
        state = await client.hgetall(f"{prefix}.state.marketdata.v1")
        assert set(state) == {b"265598", b"8314", b"4815747"}
        for key, value in state.items():
            entry = orjson.loads(value)
            ((_entry_id, fields),) = await client.xrange(f"{prefix}.marketdata.v1", entry["entry"], entry["entry"])
            assert fields[b"key"] == key and fields[b"id"].decode() == entry["event"]["id"]
            assert entry["event"]["data"] == orjson.loads(fields[b"data"])
            assert entry["event"]["type"] == "com.ibkr.marketdata.quote.v1"
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- finished orders


@pytest.mark.parametrize("broker", ["kafka", "redis"])
async def test_finished_orders_leave_the_state_destination_after_their_retention_and_stay_on_the_stream(
    broker: str, request: pytest.FixtureRequest, sim_process: SimProcess, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    address = request.getfixturevalue("kafka_broker" if broker == "kafka" else "redis_server")
    sink = kafka_sink(address) if broker == "kafka" else {"url": address}
    settings = settings_for(sim_process, tmp_path, sink, prefix, finished_order_retention_s=0.3)
    state_name, stream_name = f"{prefix}.state.orders.v1", f"{prefix}.orders.v1"
    async with running(settings) as (_bridge, acked):
        filled, _sold, open_order = await place_orders(sim_process)
        await eventually(lambda: {r.key for r in acked.tombstones} >= {str(filled).encode()}, "tombstones")
    assert str(open_order).encode() not in {r.key for r in acked.tombstones}
    assert {r.destination for r in acked.tombstones} == {state_name}
    if broker == "kafka":
        async with KafkaReader(address, state_name) as state, KafkaReader(address, stream_name) as stream:
            await eventually(lambda: len(state.records) >= acked.counts[state_name] + acked.counts[stream_name],
                             "state topic read")  # fmt: skip
            await eventually(lambda: len(stream.records) >= acked.counts[stream_name], "stream read")
        nulls = [key for key, _, value in state.records if value is None]
        assert str(filled) in nulls
        remaining, history = state.state(), stream.state()
    else:
        client = aioredis.Redis.from_url(address)
        remaining = {k.decode(): orjson.loads(v)["event"]["id"] for k, v in (await client.hgetall(state_name)).items()}
        await client.aclose()
        history, _ = await stream_state(address, stream_name)
    assert str(filled) not in remaining and str(filled) in history  # gone from the state, not from the stream
    assert ":Filled:" in history[str(filled)]
    assert remaining.get(str(open_order)) == history[str(open_order)]  # the open order stays


@pytest.mark.parametrize("broker", ["kafka", "redis"])
async def test_an_unsubscribed_conid_leaves_the_market_data_state_and_the_others_stay(
    broker: str, request: pytest.FixtureRequest, sim_process: SimProcess, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    address = request.getfixturevalue("kafka_broker" if broker == "kafka" else "redis_server")
    sink = kafka_sink(address) if broker == "kafka" else {"url": address}
    settings = settings_for(sim_process, tmp_path, sink, prefix)
    state_name, stream_name = f"{prefix}.state.marketdata.v1", f"{prefix}.marketdata.v1"
    async with running(settings) as (bridge, acked):
        await eventually(lambda: acked.counts[stream_name] >= 20, "quotes published")
        await bridge.admin.unsubscribe({"key": "md:8314"})
        await eventually(lambda: [r.key for r in acked.tombstones] == [b"8314"], "the conid's tombstone")
        published = acked.counts[stream_name]
        await eventually(lambda: acked.counts[stream_name] >= published + 5, "quotes of the other conids")
    if broker == "kafka":
        async with KafkaReader(address, state_name) as state:
            await eventually(lambda: len(state.records) >= acked.counts[state_name] + acked.counts[stream_name],
                             "state topic read")  # fmt: skip
        remaining = state.state()
    else:
        client = aioredis.Redis.from_url(address)
        remaining = {k.decode(): orjson.loads(v)["event"]["id"] for k, v in (await client.hgetall(state_name)).items()}
        await client.aclose()
    assert set(remaining) == {"265598", "4815747"}
