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
from dataclasses import dataclass
from typing import Protocol

import orjson

from bridge.events import EventClass


@dataclass(slots=True)
class Record:
    """One encoded event on its way to a sink. Treated as immutable; not frozen only because a
    frozen dataclass costs ~1 us more to build, which matters at 100k records/s."""

    destination: str
    key: bytes
    data: bytes
    attributes: tuple[tuple[str, str | int], ...]
    event_class: EventClass
    event_type: str
    updated_ms: int | None = None  # gateway time of the underlying data, for lag metrics

    @property
    def id(self) -> str:
        for name, value in self.attributes:
            if name == "id":
                return str(value)
        return ""

    def structured(self) -> bytes:
        """The CloudEvents structured-mode JSON envelope, with ``data`` spliced in unchanged."""
        return structured_envelope(self.attributes, self.data)


def structured_envelope(attributes: Sequence[tuple[str, str | int]], data: bytes) -> bytes:
    head = orjson.dumps(dict(attributes))
    return head[:-1] + b',"data":' + data + b"}"


class Sink(Protocol):
    """A destination for batches of records."""

    name: str

    async def start(self) -> None: ...

    async def publish(self, batch: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...
