"""State destinations (pure parts): which orders are finished, when they leave, what a tombstone
is, and how the Kafka batch and the Redis pipeline write one."""

from __future__ import annotations

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from bridge.codec import EnvelopeContext
from bridge.events import EventClass, Order
from bridge.routing import Router
from bridge.sinks.kafka_batch import RecordBatchBuilder
from bridge.sinks.kafka_headers import BinaryHeaderSection, binary_headers
from bridge.sinks.redis import STATE_SCRIPT, XaddEncoder
from bridge.state import FinishedOrders, is_finished, quote_key_of_subscription, tombstone
from tests.fixtures.brokers import order_record, quote_record
from tests.unit.test_redis_sink_encoding import parse_commands


def order(status: str | None) -> Order:
    return Order(account="DU1", order_id=7, changed=("status",), reconciled=False, status=status)


def test_filled_and_cancelled_orders_are_finished_and_inactive_ones_are_not() -> None:
    assert is_finished(order("Filled")) and is_finished(order("Cancelled")) and is_finished(order("cancelled"))
    assert not any(is_finished(order(s)) for s in ("Inactive", "PreSubmitted", "Submitted", "PendingCancel", None))


def test_a_finished_order_expires_once_after_its_retention_from_its_last_change() -> None:
    finished = FinishedOrders(retention_ms=1_000)
    finished.observe(b"1", True, now_ms=0)
    finished.observe(b"2", True, now_ms=100)
    finished.observe(b"1", True, now_ms=500)  # changed again: its retention starts over
    assert finished.expired(999) == []
    assert finished.expired(1_100) == [b"2"]
    assert finished.expired(1_100) == []
    assert finished.expired(1_500) == [b"1"] and len(finished) == 0


def test_an_order_that_is_not_finished_any_more_is_not_removed() -> None:
    finished = FinishedOrders(retention_ms=10)
    finished.observe(b"1", True, now_ms=0)
    finished.observe(b"1", False, now_ms=5)
    assert finished.expired(1_000) == []


def test_a_tombstone_is_a_critical_record_without_data_carrying_the_cloudevents_attributes() -> None:
    ctx = EnvelopeContext(source="urn:ibkr-bridge:test", session_epoch=3)
    record = tombstone("ibkr.state.orders.v1", b"1001", ctx, 1_700_000_000_000)
    attributes = dict(record.attributes)
    assert record.data == b"" and record.event_class is EventClass.CRITICAL
    assert attributes["type"] == Order.TYPE and attributes["subject"] == "1001" and attributes["sessionepoch"] == 3
    assert "datacontenttype" not in attributes and "dataschema" not in attributes
    assert record.structured() == b'{"specversion":"1.0","id":"1001:removed:1700000000000","source":"urn:ibkr-bridge:test",' \
        b'"type":"com.ibkr.orders.order.v1","subject":"1001","time":"2023-11-14T22:13:20.000Z","sessionepoch":3,"sequence":1}'


def test_market_data_subscription_keys_map_to_the_quote_state_keys() -> None:
    assert quote_key_of_subscription("md:265598") == b"265598"
    assert quote_key_of_subscription("md:265598@SMART") == b"265598"
    assert quote_key_of_subscription("md:28812380;;;95814/1,95815/-1") == b"28812380;;;95814/1,95815/-1"
    assert quote_key_of_subscription("or") is None


def test_a_tombstone_in_a_kafka_batch_is_a_null_value_as_aiokafka_writes_it() -> None:
    records = [order_record("s", 1001, 1), tombstone("s", b"1001", EnvelopeContext(), 1), order_record("s", 1002, 2)]
    ours = RecordBatchBuilder("none", 10_000_000, 5)
    sections = BinaryHeaderSection()
    theirs = BatchBuilder(10_000_000, 0)
    for record in records:
        assert ours.add(record.key, record.data or None, sections(record.attributes))
        assert theirs.append(timestamp=5, key=record.key, value=record.data or None,
                             headers=binary_headers(record.attributes)) is not None  # fmt: skip
    assert bytes(ours._build()) == bytes(theirs._build())
    values = [r.value for r in DefaultRecordBatch(bytes(ours._build()))]
    assert values[1] is None and values[0] == records[0].data


def test_the_state_entries_of_a_redis_pipeline_run_the_script_and_tombstones_delete_the_field() -> None:
    state = {"md": "state.md"}
    encoder = XaddEncoder(1000, None, state)
    quote = quote_record("md", 265598, 1)
    records = [quote, order_record("orders", 1, 1), tombstone("state.md", b"265598", EnvelopeContext(), 1)]
    payload, leading = encoder.encode(records, now_ms=0)
    load, script, xadd, hdel = parse_commands(payload)
    assert leading == 1 and load == [b"SCRIPT", b"LOAD", STATE_SCRIPT]
    assert script[:8] == [b"EVALSHA", script[1], b"2", b"md", b"state.md", b"265598", quote.structured(), b"3"]
    assert script[8:11] == [b"MAXLEN", b"~", b"1000"] and script[11:13] == [b"specversion", b"1.0"]
    assert xadd[:2] == [b"XADD", b"orders"]
    assert hdel == [b"HDEL", b"state.md", b"265598"]
    plain, leading = XaddEncoder(None, None, state).encode([order_record("orders", 1, 1)], now_ms=0)
    assert leading == 0 and parse_commands(plain)[0][0] == b"XADD"  # no script load without state entries


def test_only_streams_with_a_static_name_keep_a_state() -> None:
    assert Router().state_destinations() == {"ibkr.marketdata.v1": "ibkr.state.marketdata.v1",
                                             "ibkr.orders.v1": "ibkr.state.orders.v1"}  # fmt: skip
    assert Router(state_families=["orders"]).state_destinations() == {"ibkr.orders.v1": "ibkr.state.orders.v1"}
    assert Router({"marketdata": "md.{key}"}).state_destinations() == {"ibkr.orders.v1": "ibkr.state.orders.v1"}
    assert "ibkr.state.orders.v1" not in Router().static_destinations()

