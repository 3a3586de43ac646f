"""How one spool entry is laid out (pure apart from reading an open file).

An entry is ``[u32 length][u32 crc32 of payload][payload]`` (big-endian); the
payload is one :class:`~bridge.sinks.base.Record` serialized by
:func:`encode_record`: a fixed head (version, flags with the event class,
``updated_ms`` and five lengths) followed by destination, key, event type,
attributes (JSON) and data.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import orjson

from bridge.events import EventClass
from bridge.sinks.base import Record

FRAME_HEADER = struct.Struct(">II")  # payload length, crc32(payload)
MAX_ENTRY_BYTES = 64 << 20  # a longer length field can only be a torn or corrupt header

_RECORD_HEAD = struct.Struct(">BBqIIIII")  # version, flags, updated_ms, 5 lengths
_VERSION = 1
_HAS_UPDATED_MS = 0x01
_CLASSES: tuple[EventClass, ...] = (EventClass.MARKET_DATA, EventClass.CRITICAL, EventClass.INTERNAL)
_CLASS_CODE: dict[EventClass, int] = {cls: code for code, cls in enumerate(_CLASSES)}


class SpoolCorrupt(ValueError):
    """An entry's payload does not decode (bad version or lengths)."""


def encode_record(record: Record) -> bytes:
    """Serialize a record: destination, key, data, attributes, class, type and updated_ms."""
    destination = record.destination.encode()
    event_type = record.event_type.encode()
    attributes = orjson.dumps(record.attributes)
    flags = _HAS_UPDATED_MS if record.updated_ms is not None else 0
    head = _RECORD_HEAD.pack(
        _VERSION,
        flags | (_CLASS_CODE[record.event_class] << 4),
        record.updated_ms or 0,
        len(destination),
        len(record.key),
        len(event_type),
        len(attributes),
        len(record.data),
    )
    return b"".join((head, destination, record.key, event_type, attributes, record.data))


def decode_record(payload: bytes) -> Record:
    """Inverse of :func:`encode_record`."""
    if len(payload) < _RECORD_HEAD.size:
        raise SpoolCorrupt(f"entry of {len(payload)} bytes is shorter than its header")
    version, flags, updated_ms, *lengths = _RECORD_HEAD.unpack_from(payload)
    if version != _VERSION or (flags >> 4) >= len(_CLASSES):
        raise SpoolCorrupt(f"unknown entry version {version} or class {flags >> 4}")
    if _RECORD_HEAD.size + sum(lengths) != len(payload):
        raise SpoolCorrupt("entry lengths do not add up")
    fields: list[bytes] = []
    offset = _RECORD_HEAD.size
    for length in lengths:
        fields.append(payload[offset : offset + length])
        offset += length
    destination, key, event_type, attributes, data = fields
    return Record(
        destination=destination.decode(),
        key=key,
        data=data,
        attributes=tuple(map(tuple, orjson.loads(attributes))),
        event_class=_CLASSES[flags >> 4],
        event_type=event_type.decode(),
        updated_ms=updated_ms if flags & _HAS_UPDATED_MS else None,
    )


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_entry(handle: BinaryIO) -> bytes | None:
    """The next complete, intact payload, or ``None`` at a clean end, torn tail or bad CRC."""
    header = handle.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    length, crc = FRAME_HEADER.unpack(header)
    if length > MAX_ENTRY_BYTES:
        return None
    payload = handle.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload
