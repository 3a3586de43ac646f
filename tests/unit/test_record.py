"""Records as every sink sees them: codec records carry their envelope as head and tail, and
behave exactly like records built from the full attribute tuple."""

from __future__ import annotations

import orjson
import pytest

from bridge.codec import EnvelopeContext, encode
from bridge.delivery.spool_format import decode_record, encode_record
from bridge.events import EventClass, Quote
from bridge.routing import Route
from bridge.sinks.base import Record
from bridge.sinks.redis import XaddEncoder


def _codec_record(ctx: EnvelopeContext, n: int) -> Record:
    quote = Quote(conid=265598, conid_ex=None, updated_ms=1_700_000_000_000 + n, server_id=None,
                  snapshot=False, changed=("31",), values={"31": str(n)})  # fmt: skip
    return encode(quote, Route("md", b"265598"), ctx, received_ns=0)


def _copy(record: Record) -> Record:
    return Record(record.destination, record.key, record.data, record.attributes, record.event_class,
                  record.event_type, record.updated_ms)  # fmt: skip


def test_a_codec_record_has_the_full_cloudevents_attributes_in_order() -> None:
    record = _codec_record(EnvelopeContext(source="urn:a", session_epoch=4, sequence=9), 1)
    assert record.envelope_head is not None and record.envelope_tail is not None
    assert [name for name, _ in record.attributes] == [
        "specversion", "source", "type", "datacontenttype", "dataschema", "sessionepoch",
        "id", "time", "subject", "sequence",
    ]  # fmt: skip
    attributes = dict(record.attributes)
    assert attributes["id"] == record.id == "265598:1700000000001"
    assert attributes["time"] == "2023-11-14T22:13:20.001Z"
    assert (attributes["subject"], attributes["sequence"], attributes["sessionepoch"]) == ("265598", 10, 4)
    assert record.attributes is record.attributes  # made once


def test_a_codec_record_equals_its_copy_built_from_attributes_in_every_sink_shape() -> None:
    record = _codec_record(EnvelopeContext(), 2)
    copy = _copy(record)
    assert copy.envelope_head is None and copy.envelope_tail is None
    assert record == copy and repr(record) == repr(copy)
    assert record.id == copy.id
    assert record.structured() == copy.structured()
    assert orjson.loads(record.structured())["data"] == orjson.loads(record.data)
    assert decode_record(encode_record(record)) == record  # the spool
    encoder = XaddEncoder(maxlen=100, retention_ms=None)
    assert encoder.encode([record], 0) == encoder.encode([copy], 0)  # redis


def test_records_compare_by_value_and_cannot_be_hashed() -> None:
    record = Record("d", b"k", b"{}", (("id", "x"),), EventClass.CRITICAL, "t")
    assert record.updated_ms is None and record.id == "x"
    assert record == Record(destination="d", key=b"k", data=b"{}", attributes=(("id", "x"),),
                            event_class=EventClass.CRITICAL, event_type="t", updated_ms=None)  # fmt: skip
    assert record != Record("d", b"k", b"{}", (("id", "y"),), EventClass.CRITICAL, "t")
    assert record != Record("d", b"k", b"{}", (("id", "x"),), EventClass.CRITICAL, "t", 5)
    assert Record("d", b"k", b"{}", (), EventClass.CRITICAL, "t").id == ""
    with pytest.raises(TypeError):
        hash(record)
