"""Reading Kafka topics back for ``ibkr-bridge tail``: the consumer side of the Kafka sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors

from bridge.errors import SinkUnavailable
from bridge.sinks.kafka import KafkaSinkOptions


async def read_topics(
    options: KafkaSinkOptions, topics: Sequence[str], from_beginning: bool = False
) -> AsyncIterator[tuple[str, bytes, dict[str, str], bytes]]:
    """Yield ``(topic, key, ce attributes, value)`` for every record of ``topics``.

    Binary mode: the attributes come from the ``ce_*`` headers and the value is the data.
    Structured mode: no ``ce_*`` headers; the value is the whole envelope.
    """
    kwargs = options.client_kwargs()
    reset = "earliest" if from_beginning else "latest"
    consumer = AIOKafkaConsumer(*topics, auto_offset_reset=reset, enable_auto_commit=False, **kwargs)
    try:
        await consumer.start()
    except kafka_errors.KafkaError as exc:
        await consumer.stop()  # never left unclosed
        raise SinkUnavailable(f"kafka unavailable at {options.bootstrap_servers}: {exc}") from exc
    try:
        async for message in consumer:
            attributes = {
                name[3:]: value.decode()
                for name, value in message.headers or ()
                if name.startswith("ce_") and isinstance(value, bytes)
            }
            yield message.topic, message.key or b"", attributes, message.value or b""  # tombstone: b""
    finally:
        await consumer.stop()
