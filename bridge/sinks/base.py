"""What every sink takes and promises.

A :class:`Record` is an event already encoded once (``data`` is the event's
JSON) plus its CloudEvents attributes, destination and key. Sinks turn it into
their own wire shape (Kafka binary-mode headers or a structured envelope; a
Redis Streams entry) without re-encoding ``data``.

A sink's ``publish`` takes a batch and either returns (every record
acknowledged) or raises :class:`bridge.errors.SinkUnavailable` (nothing, or an
unknown prefix, acknowledged: retry the whole batch; consumers dedupe by ``id``)
or :class:`bridge.errors.SinkRejected` (record ``index`` refused for good).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import orjson

from bridge.events import EventClass

Attribute = tuple[str, str | int]
EnvelopeTail = tuple[str, str, str, int]  # the values of id, time, subject, sequence
_NAMES = ("destination", "key", "data", "attributes", "event_class", "event_type", "updated_ms")


class Record:
    """One encoded event on its way to a sink. Treated as immutable (compared by value, unhashable,
    like the non-frozen dataclass it replaces). A plain slotted class: at 100k records/s a frozen
    dataclass, or even the generated ``__init__``, is a measurable share of the CPU.

    ``attributes`` are the CloudEvents attributes as ``(name, value)`` pairs. The codec builds its
    records without them (:meth:`enveloped`): ``envelope_head`` is the constant part shared by every
    record of an event type and session (specversion ... sessionepoch, one tuple object) and
    ``envelope_tail`` the values of ``id``, ``time``, ``subject`` and ``sequence``; the full tuple
    (``head`` followed by those four pairs) is made on first use. The Kafka sink encodes its
    headers from head and tail directly. Records built from ``attributes`` have no head or tail.
    """

    __slots__ = (
        "_attributes",
        "data",
        "destination",
        "envelope_head",
        "envelope_tail",
        "event_class",
        "event_type",
        "key",
        "updated_ms",
    )

    destination: str
    key: bytes
    data: bytes
    event_class: EventClass
    event_type: str
    updated_ms: int | None  # gateway time of the underlying data, for lag metrics
    envelope_head: tuple[Attribute, ...] | None
    envelope_tail: EnvelopeTail | None
    _attributes: tuple[Attribute, ...] | None

    def __init__(
        self,
        destination: str,
        key: bytes,
        data: bytes,
        attributes: tuple[Attribute, ...],
        event_class: EventClass,
        event_type: str,
        updated_ms: int | None = None,
    ) -> None:
        self.destination = destination
        self.key = key
        self.data = data
        self._attributes = attributes
        self.event_class = event_class
        self.event_type = event_type
        self.updated_ms = updated_ms
        self.envelope_head = None
        self.envelope_tail = None

    @classmethod
    def enveloped(
        cls,
        destination: str,
        key: bytes,
        data: bytes,
        head: tuple[Attribute, ...],
        tail: EnvelopeTail,
        event_class: EventClass,
        event_type: str,
        updated_ms: int | None,
    ) -> Record:
        """A record whose attributes are ``head`` then ``id``, ``time``, ``subject``, ``sequence``
        with the values of ``tail`` (how the codec builds every record)."""
        record = _new_record(cls)
        record.destination = destination
        record.key = key
        record.data = data
        record._attributes = None
        record.envelope_head = head
        record.envelope_tail = tail
        record.event_class = event_class
        record.event_type = event_type
        record.updated_ms = updated_ms
        return record

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        attributes = self._attributes
        if attributes is None:
            head, tail = self.envelope_head, self.envelope_tail
            assert head is not None and tail is not None
            attributes = self._attributes = envelope_attributes(head, tail)
        return attributes

    @property
    def id(self) -> str:
        tail = self.envelope_tail
        if tail is not None:
            return tail[0]
        for name, value in self.attributes:
            if name == "id":
                return str(value)
        return ""

    def structured(self) -> bytes:
        """The CloudEvents structured-mode JSON envelope, with ``data`` spliced in unchanged."""
        return structured_envelope(self.attributes, self.data)

    def _fields(self) -> tuple[object, ...]:
        return (self.destination, self.key, self.data, self.attributes, self.event_class, self.event_type,
                self.updated_ms)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(_NAMES, self._fields(), strict=True))
        return f"Record({fields})"


_new_record = object.__new__


def envelope_attributes(head: tuple[Attribute, ...], tail: EnvelopeTail) -> tuple[Attribute, ...]:
    """``head`` followed by ``id``, ``time``, ``subject`` and ``sequence`` with the values of ``tail``."""
    event_id, time, subject, sequence = tail
    return (*head, ("id", event_id), ("time", time), ("subject", subject), ("sequence", sequence))


def structured_envelope(attributes: Sequence[tuple[str, str | int]], data: bytes) -> bytes:
    head = orjson.dumps(dict(attributes))
    return head[:-1] + b',"data":' + data + b"}"


class Sink(Protocol):
    """A destination for batches of records."""

    name: str

    async def start(self) -> None: ...

    async def publish(self, batch: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...
