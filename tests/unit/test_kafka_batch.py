"""The sink's own record-batch encoder against aiokafka's builder and reader, without a broker."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from bridge.codec import EnvelopeContext, encode
from bridge.delivery.spool_format import decode_record, encode_record
from bridge.events import Execution, Quote
from bridge.routing import Route
from bridge.sinks import kafka
from bridge.sinks.base import Record, envelope_attributes
from bridge.sinks.kafka_batch import Codec, RecordBatchBuilder, varint
from bridge.sinks.kafka_headers import BinaryHeaderSection, binary_headers, header_section
from tests.fixtures.brokers import order_record, quote_record

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TIMESTAMP_MS = 1_700_000_000_123


def sample_records() -> list[Record]:
    records = [quote_record("md", 265_598 + n % 7, n) for n in range(40)]
    records += [order_record("orders", 1001, n) for n in range(5)]
    records.append(quote_record("md", 8314, 99, data_bytes=9_000))  # value length past the varint table
    records.append(Record("md", b"", b"{}", (), records[0].event_class, "t"))  # no key, no headers
    long_subject = (*records[0].attributes[:8], ("subject", "s" * 300), ("sequence", 2**40))
    records.append(Record("md", b"k" * 200, b"{}", long_subject, records[0].event_class, "t"))
    return records


def aiokafka_batch(records: list[Record], codec: str, producer_state: tuple[int, int, int] | None) -> bytes:
    builder = BatchBuilder(10_000_000, CODEC_IDS[codec])
    for record in records:
        metadata = builder.append(
            timestamp=TIMESTAMP_MS,
            key=record.key,
            value=record.data,
            headers=binary_headers(record.attributes),
        )
        assert metadata is not None
    if producer_state is not None:
        builder._set_producer_state(*producer_state)
    return bytes(builder._build())


def our_batch(records: list[Record], codec: Codec, producer_state: tuple[int, int, int] | None) -> bytes:
    builder = RecordBatchBuilder(codec, 10_000_000, TIMESTAMP_MS)
    sections = BinaryHeaderSection()
    for record in records:
        assert builder.add(record.key, record.data, sections(record.attributes))
    if producer_state is not None:
        builder._set_producer_state(*producer_state)
    assert builder.record_count() == len(records)
    return bytes(builder._build())


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4"])
@pytest.mark.parametrize("producer_state", [None, (4711, 3, 120)])
def test_batches_are_byte_for_byte_what_aiokafka_builds_for_the_same_records(
    codec: Codec, producer_state: tuple[int, int, int] | None
) -> None:
    records = sample_records()
    assert our_batch(records, codec, producer_state) == aiokafka_batch(records, codec, producer_state)


@pytest.mark.parametrize("producer_state", [None, (4711, 3, 120)])
def test_zstd_batches_hold_what_aiokafka_builds_for_the_same_records(
    producer_state: tuple[int, int, int] | None,
) -> None:
    """zstd goes through a reused context rather than aiokafka's: the frame's bytes may differ,
    the batch header and what the records decompress to may not."""
    records = sample_records()
    ours = DefaultRecordBatch(our_batch(records, "zstd", producer_state))
    theirs = DefaultRecordBatch(aiokafka_batch(records, "zstd", producer_state))
    assert ours.validate_crc() and theirs.validate_crc()
    header = ("compression_type", "producer_id", "producer_epoch", "base_sequence", "next_offset",
              "first_timestamp", "max_timestamp")  # fmt: skip
    assert [getattr(ours, name) for name in header] == [getattr(theirs, name) for name in header]
    fields = ("offset", "timestamp", "key", "value", "headers")
    assert [[getattr(r, name) for name in fields] for r in ours] == [
        [getattr(r, name) for name in fields] for r in theirs
    ]
    assert ours.compression_type == CODEC_IDS["zstd"]


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_aiokafka_reads_back_every_key_value_and_header_in_order(codec: Codec) -> None:
    records = sample_records()
    batch = DefaultRecordBatch(our_batch(records, codec, None))
    assert batch.validate_crc()
    assert batch.compression_type == CODEC_IDS[codec]
    read: list[Any] = list(batch)
    assert [(r.offset, r.key, r.value, r.timestamp) for r in read] == [
        (i, r.key, r.data, TIMESTAMP_MS) for i, r in enumerate(records)
    ]
    assert [r.headers for r in read] == [binary_headers(r.attributes) for r in records]
    assert dict(read[0].headers)["ce_type"] == Quote.TYPE.encode()


def test_a_full_batch_refuses_the_next_record_like_aiokafka_but_always_takes_the_first() -> None:
    records = [quote_record("md", 265_598, n) for n in range(200)]
    batch_size = 5_000
    ours = RecordBatchBuilder("zstd", batch_size, TIMESTAMP_MS)
    theirs = BatchBuilder(batch_size, CODEC_IDS["zstd"])
    sections = BinaryHeaderSection()
    taken = [ours.add(r.key, r.data, sections(r.attributes)) for r in records]
    kept = [theirs.append(timestamp=1, key=r.key, value=r.data, headers=binary_headers(r.attributes)) is not None
            for r in records]  # fmt: skip
    assert taken.index(False) == kept.index(False) > 1
    huge = RecordBatchBuilder("none", 100, TIMESTAMP_MS)
    assert huge.add(b"k", b"x" * 1_000, b"\x00")
    assert not huge.add(b"k", b"x", b"\x00")


def test_aiokafka_cannot_add_records_to_a_submitted_batch() -> None:
    builder = RecordBatchBuilder("none", 1_000, TIMESTAMP_MS)
    assert builder.add(b"k", b"v", b"\x00")
    assert builder.closed()
    assert builder.append(timestamp=None, key=b"k", value=b"v", headers=[]) is None
    assert builder.record_count() == 1
    built = builder._build()
    assert builder._build() is built  # a retried request sends the very same bytes
    assert builder.size() == len(built)


def _quote(ctx: EnvelopeContext, conid: int, n: int) -> Record:
    event = Quote(conid=conid, conid_ex=None, updated_ms=n, server_id=None, snapshot=False,
                  changed=("31",), values={"31": str(n)})  # fmt: skip
    return encode(event, Route("md", str(conid).encode()), ctx, received_ns=n)


def _execution(ctx: EnvelopeContext, n: int) -> Record:
    event = Execution(execution_id=f"e.{n}", account="U1", order_id=n, reconciled=False, conid=8314,
                      side="S", size=1.0, price=2.5, trade_time_ms=n)  # fmt: skip
    return encode(event, Route("ex", b"U1"), ctx, received_ns=n)


def test_cached_header_sections_equal_the_plain_ones_across_types_sessions_and_replayed_records() -> None:
    ctx = EnvelopeContext(source="urn:a", session_epoch=1)
    records = [_quote(ctx, 265598, 1), _execution(ctx, 2), _quote(ctx, 8314, 3)]
    ctx.session_epoch = 2
    records += [_quote(ctx, 265598, 4), _execution(ctx, 5)]
    records += [decode_record(encode_record(r)) for r in records]  # spool replay: fresh, equal pairs
    market = records[0].event_class
    records.append(Record("md", b"k", b"{}", (("id", "x"), ("time", "t")), market, "t"))  # other shapes
    records.append(Record("md", b"k", b"{}", (*records[0].attributes, ("extra", 7)), market, "t"))
    records.append(Record("md", b"k", b"{}", (), market, "t"))
    sections = BinaryHeaderSection()
    for _ in range(2):  # cold, then cached
        for record in records:
            assert sections(record.attributes) == header_section(binary_headers(record.attributes))
    epoch = header_section([("ce_sessionepoch", b"2")])[1:]
    assert [epoch in sections(r.attributes) for r in records[:5]] == [False] * 3 + [True] * 2


@pytest.mark.parametrize("value", [0, 1, 63, 64, 8191, 8192, 2**31, -1])
def test_varints_are_kafkas_zigzag_encoding(value: int) -> None:
    from aiokafka.record.util import decode_varint

    encoded = varint(value)
    assert decode_varint(bytearray(encoded), 0) == (value, len(encoded))


def test_headers_from_envelope_head_and_tail_equal_those_of_the_full_attribute_tuple() -> None:
    ctx = EnvelopeContext(source="urn:a", session_epoch=1)
    records = [_quote(ctx, 265598, 1), _execution(ctx, 2)]
    ctx.session_epoch = 2
    records += [_quote(ctx, 8314, 3), _execution(ctx, 4)]
    head, tail = records[0].envelope_head, records[0].envelope_tail
    assert head is not None and tail is not None
    shapes = [(r.envelope_head, r.envelope_tail) for r in records]
    shapes.append((head, (tail[0], tail[1], "s" * 300, 2**40)))  # values past the one-byte lengths
    shapes.append((head[:5], tail))  # a head the codec does not make
    sections = BinaryHeaderSection()
    sections(records[1].attributes)  # this type's head first cached from a full tuple (a slice of it)
    for _ in range(2):  # cold, then cached
        for shape_head, shape_tail in shapes:
            assert shape_head is not None and shape_tail is not None
            expected = header_section(binary_headers(envelope_attributes(shape_head, shape_tail)))
            assert sections.enveloped(shape_head, shape_tail) == expected


@pytest.mark.parametrize("header_mode", ["binary", "structured"])
def test_the_plan_writes_the_same_batches_for_codec_records_and_copies_built_from_attributes(
    header_mode: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka.time, "time_ns", lambda: TIMESTAMP_MS * 1_000_000)
    ctx = EnvelopeContext()
    records = [_quote(ctx, 265598 + n % 9, n) if n % 5 else _execution(ctx, n) for n in range(60)]
    copies = [Record(r.destination, r.key, r.data, r.attributes, r.event_class, r.event_type, r.updated_ms)
              for r in records]  # fmt: skip
    assert copies[0].envelope_head is None

    def planned(batch: list[Record]) -> list[tuple[str, int, list[int], bytes]]:
        sink = kafka.KafkaSink(kafka.KafkaSinkOptions(header_mode=header_mode, max_batch_bytes=2_000))
        plan = sink._plan(sink._entries(batch), {"md": 3, "ex": 2})
        return [(p.topic, p.partition, p.indices, bytes(p.builder._build())) for p in plan]

    ours = planned(records)
    assert len(ours) > 5  # several partitions, some over more than one builder
    assert ours == planned(copies)
