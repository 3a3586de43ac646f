"""KafkaSink options, record shapes and error translation, without a broker."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka_errors

from bridge.codec import EnvelopeContext, encode
from bridge.delivery.spool_format import decode_record, encode_record
from bridge.errors import ConfigError, SinkRejected, SinkUnavailable
from bridge.events import Execution, Quote
from bridge.routing import Route
from bridge.sinks.base import Record
from bridge.sinks.kafka import BinaryHeaders, KafkaSinkOptions, binary_headers, translate
from tests.fixtures.brokers import quote_record


def test_defaults_target_apache_kafka_with_idempotence_acks_all_and_zstd() -> None:
    kwargs = KafkaSinkOptions().producer_kwargs()
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["compression_type"] == "zstd"
    assert kwargs["security_protocol"] == "PLAINTEXT"


def test_no_compression_is_spelled_none_in_config() -> None:
    assert KafkaSinkOptions(compression="none").producer_kwargs()["compression_type"] is None


def test_idempotence_with_acks_other_than_all_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.acks"):
        KafkaSinkOptions(acks=1)


def test_sasl_needs_a_username_and_password() -> None:
    with pytest.raises(ConfigError, match="sasl_password"):
        KafkaSinkOptions(sasl_mechanism="SCRAM-SHA-512", sasl_username="bridge")


def test_sasl_over_tls_selects_sasl_ssl_and_the_password_never_shows_in_repr() -> None:
    opts = KafkaSinkOptions(
        sasl_mechanism="SCRAM-SHA-256", sasl_username="bridge", sasl_password="s3cret", tls=True
    )
    kwargs = opts.producer_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["ssl_context"].check_hostname is True
    assert "s3cret" not in repr(opts)


def test_plain_sasl_without_tls_is_sasl_plaintext() -> None:
    opts = KafkaSinkOptions(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    assert opts.security_protocol == "SASL_PLAINTEXT"


def test_binary_mode_headers_are_ce_prefixed_with_content_type_for_datacontenttype() -> None:
    record = quote_record("ibkr.marketdata.v1", 265598, 1)
    headers = dict(binary_headers(record.attributes))
    assert headers["ce_id"] == record.id.encode()
    assert headers["ce_type"] == b"com.ibkr.marketdata.quote.v1"
    assert headers["content-type"] == b"application/json"
    assert headers["ce_sessionepoch"] == b"1"
    assert "ce_datacontenttype" not in headers


def _quote(ctx: EnvelopeContext, conid: int, n: int) -> Record:
    event = Quote(conid=conid, conid_ex=None, updated_ms=n, server_id=None, snapshot=False,
                  changed=("31",), values={"31": str(n)})  # fmt: skip
    return encode(event, Route("md", str(conid).encode()), ctx, received_ns=n)


def _execution(ctx: EnvelopeContext, n: int) -> Record:
    event = Execution(execution_id=f"e.{n}", account="U1", order_id=n, reconciled=False, conid=8314,
                      side="S", size=1.0, price=2.5, trade_time_ms=n)  # fmt: skip
    return encode(event, Route("ex", b"U1"), ctx, received_ns=n)


def test_cached_headers_equal_the_plain_ones_across_types_sessions_and_replayed_records() -> None:
    ctx = EnvelopeContext(source="urn:a", session_epoch=1)
    records = [_quote(ctx, 265598, 1), _execution(ctx, 2), _quote(ctx, 8314, 3)]
    ctx.session_epoch = 2
    records += [_quote(ctx, 265598, 4), _execution(ctx, 5)]
    records += [decode_record(encode_record(r)) for r in records]  # spool replay: fresh, equal pairs
    market = records[0].event_class
    records.append(Record("md", b"k", b"{}", (("id", "x"), ("time", "t")), market, "t"))  # other shapes
    records.append(Record("md", b"k", b"{}", (*records[0].attributes, ("extra", 7)), market, "t"))
    headers = BinaryHeaders()
    for _ in range(2):  # cold, then cached
        for record in records:
            assert headers(record.attributes) == binary_headers(record.attributes)
    assert [dict(headers(r.attributes))["ce_sessionepoch"] for r in records[:5]] == [b"1"] * 3 + [b"2"] * 2
    assert dict(headers(records[1].attributes))["ce_type"] == Execution.TYPE.encode()


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.MessageSizeTooLargeError(),
        kafka_errors.RecordTooLargeError(),
        kafka_errors.UnknownTopicOrPartitionError(),
        kafka_errors.TopicAuthorizationFailedError(),
        kafka_errors.InvalidTopicError(),
    ],
)
def test_records_refused_for_good_become_sink_rejected_with_the_index(error: Exception) -> None:
    translated = translate(error, 7)
    assert isinstance(translated, SinkRejected)
    assert translated.index == 7
    assert not translated.retryable


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.KafkaConnectionError(),
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.NotEnoughReplicasError(),
        kafka_errors.UnknownError(),
    ],
)
def test_broker_trouble_becomes_retryable_sink_unavailable(error: Exception) -> None:
    translated = translate(error, 3)
    assert isinstance(translated, SinkUnavailable)
    assert translated.retryable
