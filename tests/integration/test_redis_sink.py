"""RedisSink against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.errors import SinkRejected, SinkUnavailable
from bridge.sinks.redis import RedisSink, RedisSinkOptions
from tests.fixtures.brokers import ServerProcess, TcpProxy, order_record, quote_record, read_stream
from tests.fixtures.processes import free_port

HANG_GUARD_S = 20.0  # a publish that has not returned by then is hanging


def new_stream(family: str) -> str:
    return f"test.{uuid.uuid4().hex[:12]}.{family}"


@pytest.fixture
async def sink_factory() -> AsyncIterator[Callable[[RedisSinkOptions], RedisSink]]:
    sinks: list[RedisSink] = []

    def make(opts: RedisSinkOptions) -> RedisSink:
        sinks.append(RedisSink(opts))
        return sinks[-1]

    yield make
    for sink in sinks:
        await sink.close()


async def redis_command(url: str, *args: Any) -> Any:
    client = aioredis.Redis.from_url(url)
    try:
        return await client.execute_command(*args)
    finally:
        await client.aclose()


async def test_entries_carry_cloudevents_fields_key_and_json_data_in_order_per_key(
    redis_server: str, sink_factory: Callable[[RedisSinkOptions], RedisSink]
) -> None:
    quotes, orders = new_stream("marketdata"), new_stream("orders")
    sink = sink_factory(RedisSinkOptions(url=redis_server))
    await sink.start()
    records = []
    for n in range(30):
        records += [quote_record(quotes, conid, n) for conid in (265598, 8314, 4815747)]
        records.append(order_record(orders, 1001 + n % 2, n))
    for start in range(0, len(records), 17):
        await sink.publish(records[start : start + 17])

    quote_entries = await read_stream(redis_server, quotes, 90)
    order_entries = await read_stream(redis_server, orders, 30)

    assert [e[b"id"].decode() for e in quote_entries] == [r.id for r in records if r.destination == quotes]
    assert [e[b"id"].decode() for e in order_entries] == [r.id for r in records if r.destination == orders]
    first = order_entries[0]
    record = next(r for r in records if r.destination == orders)
    assert first[b"key"] == b"1001"
    assert first[b"type"] == b"com.ibkr.orders.order.v1"
    assert first[b"specversion"] == b"1.0"
    assert first[b"datacontenttype"] == b"application/json"
    assert first[b"sequence"] == str(dict(record.attributes)["sequence"]).encode()
    assert orjson.loads(first[b"data"]) == orjson.loads(record.data)
    assert sink.last_ack_ns > 0


async def test_maxlen_trimming_keeps_a_stream_near_its_cap(
    redis_server: str, sink_factory: Callable[[RedisSinkOptions], RedisSink]
) -> None:
    stream = new_stream("marketdata")
    sink = sink_factory(RedisSinkOptions(url=redis_server, maxlen=100))
    await sink.start()
    for batch in range(10):
        await sink.publish([quote_record(stream, 1, batch * 100 + n) for n in range(100)])

    length = await redis_command(redis_server, "XLEN", stream)

    assert 100 <= length < 1000


async def test_an_entry_the_server_refuses_raises_sink_rejected_with_its_index_and_the_sink_goes_on(
    redis_server: str, sink_factory: Callable[[RedisSinkOptions], RedisSink]
) -> None:
    stream, not_a_stream = new_stream("orders"), new_stream("occupied")
    await redis_command(redis_server, "SET", not_a_stream, "a string")
    sink = sink_factory(RedisSinkOptions(url=redis_server))
    await sink.start()
    batch = [order_record(stream, 1, 0), order_record(stream, 1, 1), order_record(not_a_stream, 1, 2)]

    with pytest.raises(SinkRejected) as caught:
        await sink.publish(batch)

    assert caught.value.index == 2
    assert "WRONGTYPE" in str(caught.value)
    await sink.publish([order_record(stream, 1, 3)])
    entries = await read_stream(redis_server, stream, 3)
    assert [e[b"id"].decode() for e in entries] == [order_record(stream, 1, n).id for n in (0, 1, 3)]


async def test_an_oversized_record_is_rejected_with_its_index_once_the_records_before_it_are_written(
    redis_server: str, sink_factory: Callable[[RedisSinkOptions], RedisSink]
) -> None:
    stream = new_stream("marketdata")
    sink = sink_factory(RedisSinkOptions(url=redis_server, max_record_bytes=10_000))
    await sink.start()
    batch = [quote_record(stream, 1, 0), quote_record(stream, 1, 1, data_bytes=20_000), quote_record(stream, 1, 2)]

    with pytest.raises(SinkRejected) as caught:
        await sink.publish(batch)

    assert caught.value.index == 1
    # the publisher takes the records before the refused one as acknowledged: they must be in the stream
    entries = await read_stream(redis_server, stream, 1)
    assert [e[b"id"].decode() for e in entries] == [batch[0].id]
    assert await redis_command(redis_server, "XLEN", stream) == 1


async def test_starting_against_a_port_with_no_server_raises_retryable_sink_unavailable(
    sink_factory: Callable[[RedisSinkOptions], RedisSink],
) -> None:
    sink = sink_factory(RedisSinkOptions(url=f"redis://127.0.0.1:{free_port()}/0", timeout_ms=1000))

    with pytest.raises(SinkUnavailable) as caught:
        await asyncio.wait_for(sink.start(), HANG_GUARD_S)

    assert caught.value.retryable


async def test_a_frozen_server_makes_publish_raise_sink_unavailable_and_later_publishes_succeed(
    own_redis_server: ServerProcess, sink_factory: Callable[[RedisSinkOptions], RedisSink]
) -> None:
    stream = new_stream("orders")
    sink = sink_factory(RedisSinkOptions(url=own_redis_server.address, timeout_ms=1000))
    await sink.start()
    await sink.publish([order_record(stream, 1, 0)])

    with own_redis_server.frozen(), pytest.raises(SinkUnavailable) as caught:
        await asyncio.wait_for(sink.publish([order_record(stream, 1, 1)]), HANG_GUARD_S)

    assert caught.value.retryable
    await asyncio.wait_for(sink.publish([order_record(stream, 1, 2)]), HANG_GUARD_S)
    entries = await read_stream(own_redis_server.address, stream, 3)
    assert entries[0][b"id"].decode() == order_record(stream, 1, 0).id
    assert entries[-1][b"id"].decode() == order_record(stream, 1, 2).id


async def test_a_cut_connection_raises_sink_unavailable_and_the_sink_reconnects(
    redis_server_process: ServerProcess,
    tcp_proxy: Callable[[int], TcpProxy],
    sink_factory: Callable[[RedisSinkOptions], RedisSink],
) -> None:
    stream = new_stream("orders")
    proxy = tcp_proxy(redis_server_process.port)
    sink = sink_factory(RedisSinkOptions(url=f"redis://{proxy.address}/0", timeout_ms=1000))
    await sink.start()

    proxy.cut()
    with pytest.raises(SinkUnavailable):
        await asyncio.wait_for(sink.publish([order_record(stream, 2, 0)]), HANG_GUARD_S)
    proxy.restore()

    await asyncio.wait_for(sink.publish([order_record(stream, 2, 1)]), HANG_GUARD_S)
    entries = await read_stream(redis_server_process.address, stream, 1)
    assert entries[-1][b"id"].decode() == order_record(stream, 2, 1).id


async def test_an_acl_user_publishes_and_a_wrong_password_is_unavailable_not_a_crash(
    own_redis_server: ServerProcess, sink_factory: Callable[[RedisSinkOptions], RedisSink]
) -> None:
    url = own_redis_server.address
    await redis_command(url, "ACL", "SETUSER", "bridge", "on", ">s3cret", "~test.*", "+xadd", "+client|setname")
    stream = new_stream("orders")
    sink = sink_factory(RedisSinkOptions(url=url, username="bridge", password="s3cret"))
    await sink.start()
    await sink.publish([order_record(stream, 3, 0)])
    assert len(await read_stream(url, stream, 1)) == 1

    wrong = sink_factory(RedisSinkOptions(url=url, username="bridge", password="nope"))
    with pytest.raises(SinkUnavailable):
        await wrong.start()
    assert "nope" not in repr(wrong._options)


async def test_state_hashes_survive_a_flushed_script_cache_and_a_refused_entry_names_its_record(
    redis_server: str, sink_factory: Callable[[RedisSinkOptions], RedisSink]
) -> None:
    stream, state = new_stream("marketdata"), new_stream("state.marketdata")
    sink = sink_factory(RedisSinkOptions(url=redis_server, state_hashes=((stream, state),)))
    await sink.start()
    await sink.publish([quote_record(stream, 1, 1)])
    await redis_command(redis_server, "SCRIPT", "FLUSH")  # what a restarted server looks like to EVALSHA
    await sink.publish([quote_record(stream, 2, 1), quote_record(stream, 1, 2)])
    fields = await redis_command(redis_server, "HGETALL", state)
    latest = {key: orjson.loads(value)["event"]["id"] for key, value in fields.items()}
    assert latest == {b"1": quote_record(stream, 1, 2).id, b"2": quote_record(stream, 2, 1).id}
    other = new_stream("orders")
    await redis_command(redis_server, "SET", other, "not a stream")
    with pytest.raises(SinkRejected) as refused:
        await sink.publish([quote_record(stream, 3, 1), order_record(other, 1, 1)])
    assert refused.value.index == 1  # the leading SCRIPT LOAD does not shift the index
