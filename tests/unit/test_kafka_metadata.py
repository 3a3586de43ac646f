"""The Kafka sink's topic lookups when the broker's metadata misses a topic (no broker needed)."""

from __future__ import annotations

import pytest

from bridge.errors import SinkRejected, SinkUnavailable
from bridge.sinks.kafka import KafkaSink, KafkaSinkOptions
from tests.fixtures.brokers import quote_record


class _MetadataMissesTopics:
    """An aiokafka client whose metadata has lost every topic while the broker answers."""

    unauthorized_topics: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.cluster = self
        self.refreshes = 0

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return None

    def add_topic(self, topic: str) -> None:
        pass

    async def force_metadata_update(self) -> bool:
        self.refreshes += 1
        return True


async def test_a_topic_the_sink_wrote_before_missing_from_the_metadata_is_retried_not_refused() -> None:
    sink = KafkaSink(KafkaSinkOptions(enable_idempotence=False, create_topics=("created",), request_timeout_ms=300))
    sink._partition_maps({"written": 3})  # the sink has published to it
    batch = [quote_record("written", 1, 1), quote_record("created", 1, 1), quote_record("never", 1, 1)]
    client, entries = _MetadataMissesTopics(), sink._entries(batch)
    for topic in ("written", "created"):
        with pytest.raises(SinkUnavailable):
            await sink._partition_count(client, topic, entries)
    with pytest.raises(SinkRejected) as refused:  # a topic it never saw is refused, naming the record
        await sink._partition_count(client, "never", entries)
    assert refused.value.index == 2
    assert client.refreshes > 3  # the metadata was asked again before each topic was given up
