"""The hand-built produce path: its request bytes against aiokafka's encoder, and its retries.

The wire format is checked against aiokafka's own ``ProduceRequest`` structs; the retry rules
against a scripted client (leader changes, dropped connections and partial answers cannot be
made to happen on demand on the one-node test broker). ``tests/integration/test_kafka_sink.py``
runs the same path against the real broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import errors as kafka_errors
from aiokafka.protocol.produce import (
    ProduceRequest_v3,
    ProduceRequest_v7,
    ProduceResponse_v7,
)
from aiokafka.structs import TopicPartition

from bridge.sinks.kafka_batch import RecordBatchBuilder
from bridge.sinks.kafka_produce import DirectProducer, PrebuiltProduceRequest, encode_produce_body

NOT_LEADER = kafka_errors.NotLeaderForPartitionError.errno
TOO_LARGE = kafka_errors.MessageSizeTooLargeError.errno

Answer = dict[tuple[str, int], int | None] | Exception  # error code per partition (None: left out)

TOPICS: dict[str, list[tuple[int, bytes | bytearray]]] = {
    "md.v1": [(0, b"\x01" * 70), (5, bytearray(b"batch-five"))],
    "ordres.état.v1": [(2, b"")],  # a non-ASCII topic name: its length is in bytes
}


@pytest.mark.parametrize("acks", [-1, 1, 0])
def test_the_body_is_the_one_aiokafka_encodes_for_the_same_request(acks: int) -> None:
    theirs = ProduceRequest_v7(
        None, acks, 30_000, [(t, [(p, bytes(r)) for p, r in ps]) for t, ps in TOPICS.items()]
    )

    assert encode_produce_body(acks, 30_000, TOPICS) == theirs.encode()


def test_the_request_takes_the_highest_version_both_sides_know_from_3_to_7() -> None:
    request = PrebuiltProduceRequest(-1, 1_000, TOPICS)

    newest = request.prepare({0: (0, 11)})
    oldest = request.prepare({0: (0, 3)})

    assert (newest.API_VERSION, oldest.API_VERSION) == (7, 3)
    assert isinstance(oldest, ProduceRequest_v3)
    assert newest.encode() == oldest.encode() == encode_produce_body(-1, 1_000, TOPICS)
    header = newest.build_request_header(correlation_id=9, client_id="ibkr-bridge")
    assert header.encode()[:4] == b"\x00\x00\x00\x07"  # api key 0, version 7
    with pytest.raises(kafka_errors.IncompatibleBrokerVersion):  # magic-2 batches need v3
        request.prepare({0: (0, 2)})


def test_zstd_batches_are_not_sent_to_a_broker_older_than_produce_v7() -> None:
    request = PrebuiltProduceRequest(-1, 1_000, TOPICS, zstd=True)

    assert request.prepare({0: (3, 7)}).API_VERSION == 7
    with pytest.raises(kafka_errors.IncompatibleBrokerVersion, match=r"sink\.kafka\.compression"):
        request.prepare({0: (3, 6)})


# --------------------------------------------------------------------------- the retry rules


@dataclass
class Part:
    topic: str
    partition: int
    generation: int = 0
    builder: RecordBatchBuilder = field(default_factory=lambda: _builder(b"v"))


def _builder(value: bytes) -> RecordBatchBuilder:
    builder = RecordBatchBuilder("none", 1 << 20, 1_700_000_000_000)
    builder.add(b"k", value, b"\x00")
    return builder


class Cluster:
    def __init__(self, leaders: dict[tuple[str, int], int]) -> None:
        self.leaders = leaders

    def leader_for_partition(self, tp: TopicPartition) -> int | None:
        return self.leaders.get((tp.topic, tp.partition))


class ScriptedClient:
    """Answers each request with the next scripted outcome: error codes per partition, or an exception."""

    def __init__(self, cluster: Cluster, script: list[Answer]) -> None:
        self.cluster = cluster
        self.script = script
        self.sent: list[tuple[int, bytes]] = []  # node, request body
        self.metadata_refreshes = 0

    async def send(self, node_id: int, request: PrebuiltProduceRequest) -> Any:
        self.sent.append((node_id, request.prepare({0: (0, 7)}).encode()))
        outcome = self.script.pop(0) if self.script else {}
        if isinstance(outcome, Exception):
            raise outcome
        codes = dict(outcome)
        answered = _partitions(request)
        topics: dict[str, list[Any]] = {}
        for tp in answered:
            if codes.get(tp, 0) is not None:
                topics.setdefault(tp[0], []).append((tp[1], codes.get(tp, 0), 0, -1, 0))
        return ProduceResponse_v7([(t, ps) for t, ps in topics.items()], 0)

    async def force_metadata_update(self) -> bool:
        self.metadata_refreshes += 1
        return True


def _partitions(request: PrebuiltProduceRequest) -> list[tuple[str, int]]:
    """(topic, partition) of a request, read back with aiokafka's decoder."""
    body = request.prepare({0: (0, 7)}).encode()
    decoded = ProduceRequest_v7.decode(body)
    return [(topic, partition) for topic, partitions in decoded.topics for partition, _ in partitions]


def producer(client: ScriptedClient) -> DirectProducer:
    return DirectProducer(client, acks=-1, timeout_ms=1_000, backoff_s=0)  # type: ignore[arg-type]


def test_a_publish_over_partitions_of_one_leader_is_one_request() -> None:
    parts = [Part("md", 0), Part("md", 3), Part("state", 1)]
    client = ScriptedClient(Cluster({("md", 0): 1, ("md", 3): 1, ("state", 1): 1}), [])

    refused = asyncio.run(producer(client).send(parts))

    assert refused == []
    assert [node for node, _ in client.sent] == [1]


def test_a_partition_whose_leader_moved_is_sent_again_with_the_same_bytes_after_a_metadata_refresh() -> None:
    parts = [Part("md", 0), Part("md", 1)]
    client = ScriptedClient(Cluster({("md", 0): 1, ("md", 1): 1}), [{("md", 1): NOT_LEADER}])

    refused = asyncio.run(producer(client).send(parts))

    assert refused == []
    assert client.metadata_refreshes == 1
    first, again = client.sent
    assert len(again[1]) < len(first[1])  # only the failed partition
    assert bytes(parts[1].builder.build()) in again[1]


def test_a_dropped_connection_and_an_unanswered_partition_are_retried_until_acknowledged() -> None:
    parts = [Part("md", 0), Part("md", 1)]
    script: list[Answer] = [
        kafka_errors.KafkaConnectionError("reset"),
        {("md", 0): None},  # the answer leaves partition 0 out
    ]
    client = ScriptedClient(Cluster({("md", 0): 1, ("md", 1): 1}), script)

    refused = asyncio.run(producer(client).send(parts))

    assert refused == []
    assert len(client.sent) == 3


def test_a_partition_with_no_known_leader_waits_for_metadata() -> None:
    cluster = Cluster({("md", 0): 1})
    client = ScriptedClient(cluster, [])
    refreshed = client.force_metadata_update

    async def leader_appears() -> bool:
        cluster.leaders[("md", 1)] = 2
        return await refreshed()

    client.force_metadata_update = leader_appears  # type: ignore[method-assign]

    refused = asyncio.run(producer(client).send([Part("md", 0), Part("md", 1)]))

    assert refused == []
    assert [node for node, _ in client.sent] == [1, 2]


def test_a_refused_partition_is_reported_once_the_others_settled() -> None:
    parts = [Part("md", 0), Part("md", 1)]
    script: list[Answer] = [{("md", 0): TOO_LARGE, ("md", 1): NOT_LEADER}]
    client = ScriptedClient(Cluster({("md", 0): 1, ("md", 1): 1}), script)

    refused = asyncio.run(producer(client).send(parts))

    assert [(part.partition, type(error)) for part, error in refused] == [
        (0, kafka_errors.MessageSizeTooLargeError)
    ]
    assert len(client.sent) == 2  # partition 1 was sent again and acknowledged


def test_a_partitions_second_batch_goes_out_only_once_its_first_is_acknowledged() -> None:
    first, other = Part("md", 0, builder=_builder(b"first")), Part("md", 1, builder=_builder(b"other"))
    second = Part("md", 0, generation=1, builder=_builder(b"second"))
    client = ScriptedClient(Cluster({("md", 0): 1, ("md", 1): 1}), [{("md", 0): NOT_LEADER}])

    asyncio.run(producer(client).send([first, other, second]))

    batches = {
        name: bytes(part.builder.build())
        for name, part in (("first", first), ("other", other), ("second", second))
    }
    requests = [{name for name, batch in batches.items() if batch in body} for _, body in client.sent]
    assert requests == [{"first", "other"}, {"first"}, {"second"}]


def test_a_partitions_later_batch_is_not_sent_once_an_earlier_one_was_refused() -> None:
    first, other = Part("md", 0, builder=_builder(b"first")), Part("md", 1, builder=_builder(b"other"))
    second, later = Part("md", 0, 1, _builder(b"second")), Part("md", 1, 1, _builder(b"later"))
    client = ScriptedClient(Cluster({("md", 0): 1, ("md", 1): 1}), [{("md", 0): TOO_LARGE}])

    refused = asyncio.run(producer(client).send([first, other, second, later]))

    assert [part for part, _ in refused] == [first]
    sent = b"".join(body for _, body in client.sent)
    assert bytes(later.builder.build()) in sent and bytes(second.builder.build()) not in sent


def test_partitions_of_two_leaders_go_out_concurrently_one_request_each() -> None:
    started: list[int] = []

    class Slow(ScriptedClient):
        async def send(self, node_id: int, request: PrebuiltProduceRequest) -> Any:
            started.append(node_id)
            await asyncio.sleep(0.01)
            assert len(started) == 2  # the other request went out meanwhile
            return await super().send(node_id, request)

    client = Slow(Cluster({("md", 0): 1, ("md", 1): 2}), [])

    assert asyncio.run(producer(client).send([Part("md", 0), Part("md", 1)])) == []
    assert sorted(node for node, _ in client.sent) == [1, 2]
