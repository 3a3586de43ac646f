"""Idempotent producers need a broker that grants producer ids; say so once when it does not.

aiokafka's sender asks for a producer id (InitProducerId) when idempotence is on and, when the
broker refuses (some Kafka-protocol brokers answer ``UnknownError``), logs it and retries every
few seconds forever while nothing is written. The sink asks once itself at start, and a refusal
becomes :class:`IdempotenceRefused`: not retried, never a silent fallback to non-idempotent
writes, and worded with what was refused, how to turn idempotence off and what that gives up.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.transaction import InitProducerIdRequest

from bridge.errors import SinkError

# Answers to InitProducerId that mean "try again", as aiokafka's sender treats them.
_PID_TRANSIENT = (
    kafka_errors.NoError,
    kafka_errors.CoordinatorNotAvailableError,
    kafka_errors.NotCoordinatorError,
    kafka_errors.CoordinatorLoadInProgressError,
    kafka_errors.ConcurrentTransactions,
)

IDEMPOTENCE_REFUSED = (
    "kafka broker {servers} refused an idempotent producer: it answered InitProducerId with {error} "
    "(error code {code}), so no record can be written with enable_idempotence on. To use this broker, "
    "turn idempotence off: sink.kafka.enable_idempotence: false in the config file, "
    "BRIDGE_SINK__KAFKA__ENABLE_IDEMPOTENCE=false, or `ibkr-bridge run --no-kafka-idempotence`. "
    "That gives up exactly-once writes: a batch retried after a lost acknowledgement is written again, "
    "so consumers can see duplicates (same CloudEvents id: deduplicate by id); order within a partition "
    "is kept (one batch in flight per partition)."
)


class IdempotenceRefused(SinkError):
    """The broker does not grant producer ids: idempotent writes are impossible there (never retried)."""

    retryable = False


class _SenderPidNoise(logging.Filter):
    """aiokafka's sender logs every refused InitProducerId forever; the sink reports it once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unexpected error during InitProducerIdRequest")


logging.getLogger("aiokafka.producer.sender").addFilter(_SenderPidNoise())


async def check_idempotence(client_kwargs: dict[str, Any]) -> None:
    """Ask a broker for a producer id as aiokafka's producer does; raise IdempotenceRefused if refused.

    Called after the producer failed to start with idempotence on; a probe that cannot reach a
    broker returns quietly (the start error then stands as it is).
    """
    client = AIOKafkaClient(**client_kwargs)
    try:
        await client.bootstrap()
        request = InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)
        response = await client.send(client.get_random_node(), request)
    except kafka_errors.KafkaError:
        return
    finally:
        await client.close()
    error = kafka_errors.for_code(response.error_code)
    if error in _PID_TRANSIENT:
        return
    message = IDEMPOTENCE_REFUSED.format(
        servers=client_kwargs["bootstrap_servers"], error=error.__name__, code=response.error_code
    )
    raise IdempotenceRefused(message)
