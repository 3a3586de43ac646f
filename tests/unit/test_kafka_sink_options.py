"""KafkaSink options, record shapes and error translation, without a broker."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka_errors

from bridge.errors import ConfigError, SinkRejected, SinkUnavailable
from bridge.sinks.kafka import KafkaSinkOptions, translate
from bridge.sinks.kafka_headers import binary_headers
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
