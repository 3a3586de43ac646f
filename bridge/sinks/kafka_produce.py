"""One ProduceRequest per broker per publish, sent on aiokafka's client connections.

aiokafka's producer ships a batch through its accumulator and sender task: a future per
batch, a wake-up of the sender, a ``SendProduceReqHandler`` per node, the request encoded field
by field by its ``Struct`` schema, a wake-up per acknowledged batch. When frames trickle, a
publish cycle carries a few records and that machinery is most of its cost
(``tests/bench/bench_publish_cycle.py``, one run: 388 µs of CPU for a cycle of one record through
the sender, 476 µs for six over six partitions; 260 and 376 µs here; 135 and 173 µs for the Redis
sink's pipelined XADD).

Here the sink's record batches (``kafka_batch``) go out as one request per leader, its body
packed with ``struct`` in one pass, awaited on the connection aiokafka's client keeps (connection,
TLS, SASL, API versions and metadata all stay aiokafka's). A partition that fails with a retriable
error (a leader change, a timeout) is sent again, the same bytes, after a back-off and a metadata
refresh, until the publish deadline; one that is refused for good ends the publish with that
error once the others have settled.

Only for producers without idempotence: an idempotent producer's batches carry a producer id
and per-partition sequence numbers, and the Kafka-protocol broker the test suite runs refuses
producer ids, so that bookkeeping could not be tested against a real broker here. Idempotent
sinks keep aiokafka's sender (``KafkaSink`` picks the path when it is made).

ProduceRequest versions 3 to 7 share the request layout (the response grows a field at 5)::

    transactional_id nullable string (int16 length, -1: null) | acks int16 | timeout_ms int32 |
    [topic string | [partition int32 | records bytes (int32 length)]]
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import (
    ProduceRequest,
    ProduceRequest_v3,
    ProduceRequest_v4,
    ProduceRequest_v5,
    ProduceRequest_v6,
    ProduceRequest_v7,
)
from aiokafka.structs import TopicPartition

_log = logging.getLogger(__name__)

_HEAD = struct.Struct(">hhii")  # transactional_id (null), acks, timeout, topic count
_PARTITION = struct.Struct(">ii")  # partition, records length
_COUNT = struct.Struct(">i")
_SHORT = struct.Struct(">h")

PartitionData = tuple[int, bytes | bytearray]  # partition, one record batch
_Outcome = tuple[Any, Any]  # a part and its aiokafka error, None once acknowledged


def encode_produce_body(acks: int, timeout_ms: int, topics: dict[str, list[PartitionData]]) -> bytes:
    """The body of a ProduceRequest v3-v7 (after the request header) for ``topics``."""
    parts: list[bytes | bytearray] = [_HEAD.pack(-1, acks, timeout_ms, len(topics))]
    for topic, partitions in topics.items():
        name = topic.encode()
        parts += (_SHORT.pack(len(name)), name, _COUNT.pack(len(partitions)))
        for partition, records in partitions:
            parts += (_PARTITION.pack(partition, len(records)), records)
    return b"".join(parts)


def _prebuilt(struct_class: type[Any]) -> type[Any]:
    """``struct_class`` with its body encoded beforehand (aiokafka's connection calls ``encode()``)."""

    def __init__(self: Any, body: bytes) -> None:
        self._body = body

    def encode(self: Any) -> bytes:
        return self._body  # type: ignore[no-any-return]

    def __repr__(self: Any) -> str:  # aiokafka logs requests at debug level
        return f"{struct_class.__name__}({len(self._body)} bytes)"

    namespace = {"__init__": __init__, "encode": encode, "__repr__": __repr__}
    return type(f"Prebuilt{struct_class.__name__}", (struct_class,), namespace)


_VERSIONS = (ProduceRequest_v3, ProduceRequest_v4, ProduceRequest_v5, ProduceRequest_v6, ProduceRequest_v7)
_PREBUILT: dict[type[Any], type[Any]] = {version: _prebuilt(version) for version in _VERSIONS}


class PrebuiltProduceRequest(ProduceRequest):  # type: ignore[misc]
    """A ProduceRequest whose body is already encoded; negotiates v3-v7 like aiokafka's own.

    A :class:`ProduceRequest` so that aiokafka's client expects no response when ``acks`` is 0."""

    def __init__(
        self, acks: int, timeout_ms: int, topics: dict[str, list[PartitionData]], zstd: bool = False
    ) -> None:
        super().__init__(None, acks, timeout_ms, [])
        self._body = encode_produce_body(acks, timeout_ms, topics)
        self._zstd = zstd

    def build(self, request_struct_class: type[Any]) -> Any:
        prebuilt = _PREBUILT.get(request_struct_class)
        if prebuilt is None:  # v0-v2 carry no record batches of magic 2: brokers older than 0.11
            raise kafka_errors.IncompatibleBrokerVersion("the Kafka sink needs Produce v3+ (Kafka 0.11+)")
        if self._zstd and request_struct_class.API_VERSION < 7:  # the broker would refuse every batch
            raise kafka_errors.IncompatibleBrokerVersion(
                "zstd batches need Produce v7 (Kafka 2.1+); set sink.kafka.compression to lz4, gzip or none"
            )
        return prebuilt(self._body)


class _NoAnswer(kafka_errors.KafkaError):  # type: ignore[misc]
    """The broker's response left out a partition of the request (sent again)."""

    retriable = True


_REFRESH = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
)


def partition_errors(response: Any) -> dict[tuple[str, int], int]:
    """``{(topic, partition): error code}`` of a ProduceResponse (any version: both lead each entry)."""
    return {(topic, info[0]): info[1] for topic, partitions in response.topics for info in partitions}


class DirectProducer:
    """Sends a publish's partition batches as one ProduceRequest per leader (see the module docstring).

    ``parts`` are the sink's ``_PartitionBatch``es: ``topic``, ``partition``, ``generation`` (the
    n-th batch of its partition in this publish) and ``builder`` (a ``RecordBatchBuilder``).
    """

    def __init__(
        self,
        client: AIOKafkaClient,
        acks: int,
        timeout_ms: int,
        *,
        zstd: bool = False,
        backoff_s: float = 0.1,
    ) -> None:
        self.client = client
        self._zstd = zstd
        self._acks = acks
        self._timeout_ms = timeout_ms
        self._backoff_s = backoff_s
        self.last_retry: str | None = None  # the last retriable error of the publish under way

    async def send(self, plan: Sequence[Any]) -> list[tuple[Any, BaseException]]:
        """Deliver every part; the parts refused for good, with their errors, once the rest settled.

        Retriable failures are sent again (the same bytes) until the caller's deadline cancels. A
        partition's later batches are not sent once one of its batches was refused: the caller
        sends the records after the refused one again, and they must not land behind newer ones."""
        self.last_retry = None
        refused: list[tuple[Any, BaseException]] = []
        blocked: set[tuple[str, int]] = set()
        # generation by generation (the plan is sorted by it): a partition's next batch after its last
        for _, generation in groupby(plan, key=attrgetter("generation")):
            parts = [part for part in generation if (part.topic, part.partition) not in blocked]
            failed = await self._send_generation(parts)
            blocked.update((part.topic, part.partition) for part, _ in failed)
            refused += failed
        return refused

    async def _send_generation(self, parts: Sequence[Any]) -> list[tuple[Any, BaseException]]:
        refused: list[tuple[Any, BaseException]] = []
        pending = list(parts)
        while pending:
            by_node, retry = self._by_leader(pending)
            refresh = bool(retry)
            if by_node:
                if len(by_node) == 1:
                    ((node, node_parts),) = by_node.items()
                    outcomes = await self._send_node(node, node_parts)
                else:
                    sent = [self._send_node(node, node_parts) for node, node_parts in by_node.items()]
                    outcomes = [o for node_outcomes in await asyncio.gather(*sent) for o in node_outcomes]
                for part, error in outcomes:
                    if error is None:
                        continue
                    if not error.retriable:
                        refused.append((part, error))
                        continue
                    retry.append(part)
                    self.last_retry = f"{type(error).__name__}: {error}"
                    refresh = refresh or error.invalid_metadata or isinstance(error, _REFRESH)
            if not retry:
                break
            _log.debug("kafka: sending %d partition batches again: %s", len(retry), self.last_retry)
            if refresh:
                await self.client.force_metadata_update()
            await asyncio.sleep(self._backoff_s)
            pending = retry
        return refused

    def _by_leader(self, parts: Sequence[Any]) -> tuple[dict[int, list[Any]], list[Any]]:
        """Parts by the node leading their partition, and the parts whose leader is unknown."""
        cluster = self.client.cluster
        by_node: dict[int, list[Any]] = {}
        orphans: list[Any] = []
        for part in parts:
            leader = cluster.leader_for_partition(TopicPartition(part.topic, part.partition))
            if leader is None or leader == -1:
                orphans.append(part)
                self.last_retry = f"no leader known for {part.topic}-{part.partition}"
            else:
                by_node.setdefault(leader, []).append(part)
        return by_node, orphans

    async def _send_node(self, node_id: int, parts: Sequence[Any]) -> list[_Outcome]:
        topics: dict[str, list[PartitionData]] = {}
        for part in parts:
            topics.setdefault(part.topic, []).append((part.partition, part.builder.build()))
        request = PrebuiltProduceRequest(self._acks, self._timeout_ms, topics, self._zstd)
        try:
            response = await self.client.send(node_id, request)
        except kafka_errors.KafkaError as exc:
            return [(part, exc) for part in parts]
        if response is None:  # acks 0: nothing comes back
            return [(part, None) for part in parts]
        codes = partition_errors(response)
        outcomes: list[_Outcome] = []
        for part in parts:
            code = codes.get((part.topic, part.partition))
            if code is None:
                outcomes.append((part, _NoAnswer(f"no answer for {part.topic}-{part.partition}")))
            elif code == 0:
                outcomes.append((part, None))
            else:
                error = kafka_errors.for_code(code)
                outcomes.append((part, error(part.topic) if code == _TOPIC_AUTHORIZATION else error()))
        return outcomes

    async def stop(self) -> None:
        await self.client.close()


_TOPIC_AUTHORIZATION = kafka_errors.TopicAuthorizationFailedError.errno


class SenderProducer:
    """aiokafka's producer (its accumulator and sender), for idempotent sinks: same interface."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.client = producer.client
        self.last_retry: str | None = None  # aiokafka retries inside its sender, out of sight

    async def send(self, plan: Sequence[Any]) -> list[tuple[Any, BaseException]]:
        producer = self.producer
        futures: list[asyncio.Future[Any]] = []
        try:
            for part in plan:  # one at a time: on a failure, the futures sent so far are abandoned
                sent = producer.send_batch(part.builder, part.topic, partition=part.partition)
                futures.append(await sent)
        except kafka_errors.KafkaError as exc:
            _abandon(futures)
            return [(plan[len(futures)], exc)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [(part, r) for part, r in zip(plan, results, strict=True) if isinstance(r, BaseException)]

    async def stop(self) -> None:
        await self.producer.stop()


def _abandon(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Retrieve the outcome of batches nobody will await (they may still be delivered)."""
    for future in futures:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
