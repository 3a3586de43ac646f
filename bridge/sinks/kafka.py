"""Kafka sink: the only aiokafka user (with ``kafka_batch``, its record-batch encoder,
``kafka_produce``, which ships the batches, and ``kafka_tail``, which reads topics back).

A batch of records becomes one record batch per (topic, partition), encoded by
our own :class:`~bridge.sinks.kafka_batch.RecordBatchBuilder` (the bytes the
producer's ``create_batch()`` builder writes, at a fraction of the CPU: see
``kafka_batch``): no await and no future per record. Without idempotence the
batches of a publish go out as one hand-built ProduceRequest per leader
(:class:`~bridge.sinks.kafka_produce.DirectProducer`); an idempotent sink hands
them to aiokafka's sender with ``send_batch()``, which keeps the producer id
and sequence numbers. The partition of a key is the Java client's default
(``murmur2(key) & 0x7fffffff % partitions``) so other producers of the same
keys agree. Each partition has at most one batch in flight at a time and a
partition's batches go out in order, so per-partition (and therefore per-key)
order holds; ``publish`` returns only when every partition has acknowledged.

aiokafka's exceptions stop here: records refused for good (too large, unknown
topic, authorization) raise :class:`SinkRejected` with the record's index, once the
records before it are written (the publisher takes them as acknowledged);
anything the broker may get over (connection, timeouts, leadership changes)
raises :class:`SinkUnavailable`.

State topics: a record is also written, unchanged, to its stream's state topic in the same publish;
one without data (a tombstone, ``bridge.state``) is a null value. Created state topics are compacted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from bridge.errors import ConfigError, SinkRejected, SinkUnavailable
from bridge.sinks.base import Record
from bridge.sinks.kafka_batch import RecordBatchBuilder
from bridge.sinks.kafka_headers import BinaryHeaderSection, Header, binary_headers, header_section
from bridge.sinks.kafka_idempotence import check_idempotence
from bridge.sinks.kafka_produce import DirectProducer, SenderProducer

_log = logging.getLogger(__name__)

Compression = Literal["none", "gzip", "lz4", "zstd", "snappy"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
HeaderMode = Literal["binary", "structured"]
ProducePath = Literal["direct", "sender"]

STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
_HEADER_ALLOWANCE_BYTES = 4096  # headers are measured exactly only when a record is near the limit
_PARTITION_CACHE_KEYS = 100_000  # per topic
_TOPIC_EXISTS = 36
_ACKS = {"all": -1, 1: 1, 0: 0}
_METADATA_RETRY_S = 0.1  # aiokafka's retry_backoff_ms
_Producer = DirectProducer | SenderProducer

# --------------------------------------------------------------------------- partitioner


def default_partition(key: bytes, partitions: int) -> int:
    """The Java client's partition for a keyed record: ``toPositive(murmur2(key)) % partitions``.

    ``murmur2`` is aiokafka's (the Java ``Utils.murmur2``); partitions are cached per key by the sink.
    """
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class KafkaSinkOptions:
    """Producer settings. Defaults target Apache Kafka; brokers that refuse idempotence turn it off."""

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "ibkr-bridge"
    acks: Literal["all", 1, 0] = "all"
    enable_idempotence: bool = True
    compression: Compression = "zstd"
    linger_ms: int = 0  # the publisher batches already; producer-side linger only adds latency
    max_batch_bytes: int = 262_144
    max_record_bytes: int = 1_000_000  # key + value + headers; larger records are rejected
    request_timeout_ms: int = 30_000  # also bounds a whole publish
    header_mode: HeaderMode = "binary"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_cafile: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    tls_check_hostname: bool = True
    create_topics: tuple[str, ...] = ()  # created at start when missing; state topics compacted
    state_topics: tuple[tuple[str, str], ...] = ()  # (stream topic, its state topic)
    topic_partitions: int = 6
    topic_replication: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.enable_idempotence and self.acks != "all":
            problems.append(f"kafka.acks: {self.acks!r} is not allowed with enable_idempotence (use 'all')")
        if self.sasl_mechanism is not None and not (self.sasl_username and self.sasl_password):
            problems.append("kafka.sasl_username / kafka.sasl_password: required with sasl_mechanism")
        positive = (
            "request_timeout_ms",
            "max_batch_bytes",
            "max_record_bytes",
            "topic_partitions",
            "topic_replication",
        )
        problems.extend(
            f"kafka.{name}: must be positive, got {value}"
            for name in positive
            if (value := getattr(self, name)) <= 0
        )
        if problems:
            raise ConfigError(problems)

    @property
    def security_protocol(self) -> str:
        if self.sasl_mechanism is not None:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    def client_kwargs(self) -> dict[str, Any]:
        """Connection and security arguments shared by the producer and the admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.tls:
            context = create_ssl_context(
                cafile=self.tls_cafile, certfile=self.tls_certfile, keyfile=self.tls_keyfile
            )
            context.check_hostname = self.tls_check_hostname
            kwargs["ssl_context"] = context
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    def producer_kwargs(self) -> dict[str, Any]:
        return {
            **self.client_kwargs(),
            "acks": self.acks,
            "enable_idempotence": self.enable_idempotence,
            "compression_type": None if self.compression == "none" else self.compression,
            "linger_ms": self.linger_ms,
            "max_batch_size": self.max_batch_bytes,
            "max_request_size": max(self.max_record_bytes, self.max_batch_bytes) + 65_536,
        }


# --------------------------------------------------------------------------- record shapes

_STRUCTURED_HEADERS: list[Header] = [("content-type", STRUCTURED_CONTENT_TYPE)]
_STRUCTURED_SECTION = header_section(_STRUCTURED_HEADERS)


def _headers_bytes(headers: Sequence[Header]) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers)


# --------------------------------------------------------------------------- error translation

_REJECTED: tuple[type[BaseException], ...] = (
    kafka_errors.RecordTooLargeError,
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
    kafka_errors.PolicyViolationError,
    kafka_errors.UnknownTopicOrPartitionError,
)


_TOO_LARGE = (
    kafka_errors.RecordTooLargeError,
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
)


def translate(exc: BaseException, index: int | None) -> SinkRejected | SinkUnavailable:
    """Our error for an aiokafka one; ``index`` is the record it concerns, if one."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _REJECTED):
        return SinkRejected(f"kafka refused record {index}: {text}", index=index)
    return SinkUnavailable(f"kafka unavailable: {text}")


# --------------------------------------------------------------------------- the sink


_Entry = tuple[int, str, bytes, bytes | None, bytes]  # index in the batch, topic, key, value, headers


class _PartitionBatch:
    """Records of one publish bound for one partition, in order, and the builder holding them."""

    __slots__ = ("add", "builder", "generation", "indices", "partition", "topic")

    def __init__(self, topic: str, partition: int, builder: RecordBatchBuilder, generation: int) -> None:
        self.topic = topic
        self.partition = partition
        self.builder = builder
        self.add = builder.add  # bound once: the plan appends every record through it
        self.generation = generation  # n-th builder of this partition within the publish
        self.indices: list[int] = []


class KafkaSink:
    """Publishes batches to Kafka with the batch API; see the module docstring for the guarantees."""

    name = "kafka"

    def __init__(self, options: KafkaSinkOptions, *, path: ProducePath | None = None) -> None:
        """``path``: ``direct`` (one hand-built request per broker per publish) or ``sender``
        (aiokafka's); by default ``sender`` exactly when idempotent (see ``kafka_produce``)."""
        self._options = options
        self._path: ProducePath = path or ("sender" if options.enable_idempotence else "direct")
        if self._path == "direct" and options.enable_idempotence:
            raise ValueError("the direct produce path does not do idempotence")
        self._producer: _Producer | None = None
        self._partitions: dict[str, tuple[int, dict[bytes, int]]] = {}
        self._structured = options.header_mode == "structured"
        self._header_section = BinaryHeaderSection()
        self._state_of = dict(options.state_topics)
        self.last_ack_ns = 0  # wall clock (time.time_ns) of the last publish fully acknowledged

    @property
    def options(self) -> KafkaSinkOptions:
        return self._options

    async def start(self) -> None:
        if self._producer is not None:
            return
        options = self._options
        if self._path == "sender":  # producer ids and sequences: aiokafka's sender (kafka_produce)
            aiokafka_producer = AIOKafkaProducer(**options.producer_kwargs())
            producer: _Producer = SenderProducer(aiokafka_producer)
            connect, disconnect = aiokafka_producer.start, aiokafka_producer.stop
        else:
            client = AIOKafkaClient(**options.client_kwargs())
            zstd = options.compression == "zstd"
            producer = DirectProducer(client, _ACKS[options.acks], options.request_timeout_ms, zstd=zstd)
            connect, disconnect = client.bootstrap, client.close
        try:
            await connect()
            if options.create_topics:
                await self._create_topics()
        except BaseException as exc:
            await disconnect()
            if isinstance(exc, kafka_errors.KafkaError):
                if options.enable_idempotence:
                    await check_idempotence(options.client_kwargs())  # a refusal is said once, here
                raise translate(exc, None) from exc
            raise
        self._producer = producer
        _log.info("kafka producer connected to %s", options.bootstrap_servers)

    async def publish(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        producer = self._producer
        if producer is None:
            raise SinkUnavailable("kafka sink is not started")
        deadline_s = self._options.request_timeout_ms / 1000 + 1.0
        try:
            async with asyncio.timeout(deadline_s):
                await self._publish(producer, batch)
        except TimeoutError as exc:
            why = f" (last: {producer.last_retry})" if producer.last_retry else ""
            raise SinkUnavailable(f"kafka did not acknowledge within {deadline_s:.1f} s{why}") from exc
        self.last_ack_ns = time.time_ns()

    async def close(self) -> None:
        """Wait for anything still in the producer (bounded by the request timeout), then disconnect."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(self._options.request_timeout_ms / 1000):
                await producer.stop()
        except TimeoutError:
            _log.warning("kafka producer did not drain within the request timeout; closing anyway")
            await producer.client.close()
        _log.info("kafka producer closed")

    # ----------------------------------------------------------------------- publish steps

    async def _publish(self, producer: _Producer, batch: Sequence[Record]) -> None:
        try:
            entries = self._entries(batch)
        except SinkRejected as refused:  # nothing sent yet: the records before it are delivered first,
            if refused.index:  # because a rejection promises them acknowledged (the publisher drops them)
                await self._publish(producer, batch[: refused.index])
            raise
        counts = {topic: await self._partition_count(producer.client, topic, entries)
                  for topic in {entry[1] for entry in entries}}  # fmt: skip
        plan = self._plan(entries, counts)
        failures = await producer.send(plan)
        if failures:
            part, error = min(failures, key=lambda f: f[0].indices[0])
            raise translate(error, self._blamed_index(part, error, batch)) from error

    async def _partition_count(self, client: Any, topic: str, entries: Sequence[_Entry]) -> int:
        partitions = client.cluster.partitions_for_topic(topic)  # known: no await
        if partitions:
            return len(partitions)
        try:
            partitions = await self._wait_for_topic(client, topic)
        except kafka_errors.UnknownTopicOrPartitionError as exc:
            if not await client.force_metadata_update():
                raise SinkUnavailable(f"kafka unreachable while looking up topic {topic!r}") from exc
            if topic in self._partitions or topic in self._options.create_topics:  # back from a stall
                raise SinkUnavailable(f"kafka metadata is missing topic {topic!r}, which existed") from exc
            raise translate(exc, next(i for i, t, *_ in entries if t == topic)) from exc
        except kafka_errors.KafkaError as exc:
            raise translate(exc, next(i for i, t, *_ in entries if t == topic)) from exc
        return len(partitions)

    async def _wait_for_topic(self, client: Any, topic: str) -> set[int]:
        """The partitions of a topic new to the metadata, refreshed until it shows up (what aiokafka's
        producer does in ``partitions_for``); unknown after the request timeout: UnknownTopicOrPartition."""
        client.add_topic(topic)
        give_up = time.monotonic() + self._options.request_timeout_ms / 1000
        while True:
            await client.force_metadata_update()
            partitions: set[int] | None = client.cluster.partitions_for_topic(topic)
            if partitions:
                return partitions
            if topic in client.cluster.unauthorized_topics:
                raise kafka_errors.TopicAuthorizationFailedError(topic)
            if time.monotonic() > give_up:
                raise kafka_errors.UnknownTopicOrPartitionError(topic)
            await asyncio.sleep(_METADATA_RETRY_S)

    def _entries(self, batch: Sequence[Record]) -> list[_Entry]:
        """``(index, topic, key, value, headers)`` of every record, encoded once, then of its state copy."""
        structured, section_of = self._structured, self._header_section
        enveloped, gate = section_of.enveloped, self._options.max_record_bytes - _HEADER_ALLOWANCE_BYTES
        entries: list[_Entry] = []
        value: bytes | None
        for index, record in enumerate(batch):
            if not record.data:  # a tombstone: a null value, which compaction treats as a delete
                value, headers = None, section_of(record.attributes)
            elif structured:
                value, headers = record.structured(), _STRUCTURED_SECTION
            elif (head := record.envelope_head) is not None:
                value, headers = record.data, enveloped(head, record.envelope_tail)  # type: ignore[arg-type]
            else:
                value, headers = record.data, section_of(record.attributes)
            if value is not None and len(value) + len(record.key) > gate:
                self._check_size(index, record, value)
            entries.append((index, record.destination, record.key, value, headers))
        if state_of := self._state_of:
            entries += [(i, state_of[topic], k, v, h) for i, topic, k, v, h in entries if topic in state_of]
        return entries

    def _plan(self, entries: Sequence[_Entry], counts: dict[str, int]) -> list[_PartitionBatch]:
        """A :class:`RecordBatchBuilder` per partition (more when one is full); sync: nothing interleaves."""
        plan: list[_PartitionBatch] = []
        maps = self._partition_maps(counts)
        open_parts: dict[str, list[_PartitionBatch | None]] = {t: [None] * n for t, n in counts.items()}
        codec, batch_bytes = self._options.compression, self._options.max_batch_bytes
        timestamp_ms = time.time_ns() // 1_000_000  # CreateTime of every record of this publish
        topic = ""
        by_key: dict[bytes, int] = {}
        parts: list[_PartitionBatch | None] = []
        for index, destination, key, value, headers in entries:
            if destination != topic:
                topic = destination
                by_key, parts = maps[topic], open_parts[topic]
            partition = by_key.get(key)
            if partition is None:
                partition = by_key[key] = default_partition(key, counts[topic])
            part = parts[partition]
            if part is None or not part.add(key, value, headers):
                generation = 0 if part is None else part.generation + 1
                builder = RecordBatchBuilder(codec, batch_bytes, timestamp_ms)
                part = parts[partition] = _PartitionBatch(topic, partition, builder, generation)
                plan.append(part)
                part.add(key, value, headers)
            part.indices.append(index)
        plan.sort(key=attrgetter("generation"))  # every partition's first builder goes out first
        return plan

    def _check_size(self, index: int, record: Record, value: bytes) -> None:
        limit = self._options.max_record_bytes
        headers = _STRUCTURED_HEADERS if self._structured else binary_headers(record.attributes)
        size = len(record.key) + len(value) + _headers_bytes(headers)
        if size > limit:
            raise SinkRejected(f"record {index} is {size} bytes, over max_record_bytes={limit}", index=index)

    def _partition_maps(self, counts: dict[str, int]) -> dict[str, dict[bytes, int]]:
        """Per topic, the cached partition of each key seen (reset when the partition count changes)."""
        maps = {}
        for topic, count in counts.items():
            cached = self._partitions.get(topic)
            if cached is None or cached[0] != count or len(cached[1]) > _PARTITION_CACHE_KEYS:
                cached = self._partitions[topic] = (count, {})
            maps[topic] = cached[1]
        return maps

    @staticmethod
    def _blamed_index(part: _PartitionBatch, exc: BaseException, batch: Sequence[Record]) -> int:
        """The record a rejection concerns: the largest one for size errors, else the first."""
        if isinstance(exc, _TOO_LARGE):
            return max(part.indices, key=lambda i: len(batch[i].data))
        return part.indices[0]

    async def _create_topics(self) -> None:
        options = self._options
        compact, states, n = {"cleanup.policy": "compact"}, self._state_of.values(), options.topic_partitions
        topics = [NewTopic(t, n, options.topic_replication, topic_configs=compact if t in states else {})
                  for t in options.create_topics]  # fmt: skip
        admin = AIOKafkaAdminClient(**options.client_kwargs())
        try:
            await admin.start()
            response = await admin.create_topics(topics)
        except kafka_errors.KafkaError as exc:
            raise translate(exc, None) from exc
        finally:
            await admin.close()
        for topic, code, message in response.topic_errors:
            if code not in (0, _TOPIC_EXISTS):
                error = kafka_errors.for_code(code)
                if error.retriable:
                    raise SinkUnavailable(f"kafka could not create topic {topic!r}: {message}")
                raise ConfigError([f"kafka.create_topics: {topic!r}: {error.__name__}: {message}"])
            _log.info("kafka topic %s %s", topic, "created" if code == 0 else "already exists")
