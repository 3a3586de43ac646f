"""The stdout sink writes one structured CloudEvent per line."""

from __future__ import annotations

import io

import orjson
import pytest

from bridge.codec import decode_structured
from bridge.errors import SinkUnavailable
from bridge.sinks.stdout import StdoutSink
from tests.fixtures.brokers import order_record, quote_record


async def test_each_record_becomes_one_json_line_with_attributes_and_data() -> None:
    out = io.BytesIO()
    sink = StdoutSink(out)
    records = [quote_record("ibkr.marketdata.v1", 265598, 1), order_record("ibkr.orders.v1", 42, 1)]
    await sink.start()
    await sink.publish(records)
    await sink.close()

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    attributes, data = decode_structured(lines[1])
    assert attributes["id"] == records[1].id
    assert attributes["type"] == "com.ibkr.orders.order.v1"
    assert data == orjson.loads(records[1].data)
    assert sink.last_ack_ns > 0


async def test_a_closed_stream_raises_retryable_sink_unavailable() -> None:
    out = io.BytesIO()
    out.close()
    sink = StdoutSink(out)

    with pytest.raises(SinkUnavailable) as caught:
        await sink.publish([order_record("ibkr.orders.v1", 1, 1)])

    assert caught.value.retryable
