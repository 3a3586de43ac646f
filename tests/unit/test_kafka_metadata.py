"""The Kafka sink's topic lookups when the broker's metadata misses a topic (no broker needed)."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka_errors

from bridge.errors import SinkRejected, SinkUnavailable
from bridge.sinks.kafka import KafkaSink, KafkaSinkOptions
from tests.fixtures.brokers import quote_record


class _MetadataMissesTopics:
    """A producer whose metadata has lost every topic while the broker answers."""

    def __init__(self) -> None:
        self.client = self

    async def partitions_for(self, topic: str) -> set[int]:
        raise kafka_errors.UnknownTopicOrPartitionError(topic)

    async def force_metadata_update(self) -> bool:
        return True


async def test_a_topic_the_sink_wrote_before_missing_from_the_metadata_is_retried_not_refused() -> None:
    sink = KafkaSink(KafkaSinkOptions(enable_idempotence=False, create_topics=("created",)))
    sink._partition_maps({"written": 3})  # the sink has published to it
    batch = [quote_record("written", 1, 1), quote_record("created", 1, 1), quote_record("never", 1, 1)]
    producer, entries = _MetadataMissesTopics(), sink._entries(batch)
    for topic in ("written", "created"):
        with pytest.raises(SinkUnavailable):
            await sink._partition_count(producer, topic, entries)
    with pytest.raises(SinkRejected) as refused:  # a topic it never saw is refused, naming the record
        await sink._partition_count(producer, "never", entries)
    assert refused.value.index == 2
