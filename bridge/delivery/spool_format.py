"""How one spool entry is laid out, and how a damaged segment is searched (pure apart from reading files).

An entry is a 24-byte header and its payload (big-endian)::

    [4 bytes ENTRY_MAGIC][u32 length][u64 sequence][u32 crc32(payload)][u32 crc32(the 20 bytes before)]

The sequence number grows by one per entry across segments and restarts, so records lost in a
damaged region or a missing segment are counted exactly from the next intact entry. The header
CRC covers the magic, length, sequence and payload CRC, so a header is checked without reading
its payload (a false candidate costs 20 bytes of CRC, never a payload), and a zero-filled region
never reads as an entry (its magic is wrong and the CRC of 20 zero bytes is not 0). After damage
the reader searches forward for the next ``ENTRY_MAGIC`` whose header and payload both check
(:func:`find_entry`, ``bytes.find`` over 1 MiB windows): damage costs only the damaged entries.

The payload is one :class:`~bridge.sinks.base.Record` serialized by :func:`encode_record`: a
fixed head (version, flags with the event class, ``updated_ms`` and five lengths) followed by
destination, key, event type, attributes (JSON) and data.

Segments written before this format (``[u32 length][u32 crc32(payload)][payload]``, no magic, no
sequence: "v1") are still read (:func:`read_v1_entry`), so an upgrade drains an old spool; a v1
segment starts with a length below ``MAX_ENTRY_BYTES`` (first byte < 0x04), never with the magic.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from bridge.events import EventClass
from bridge.sinks.base import Record

ENTRY_MAGIC = b"\xb5SP\x02"
ENTRY_HEADER = struct.Struct(">4sIQII")  # magic, payload length, sequence, crc32(payload), header crc
_CHECKED_HEAD = struct.Struct(">4sIQI")  # the part the header crc covers
FRAME_HEADER = struct.Struct(">II")  # v1 entries: payload length, crc32(payload)
MAX_ENTRY_BYTES = 64 << 20  # a longer length field can only be a torn or corrupt header
WINDOW_BYTES = 1 << 20  # segments are read and searched in windows of this size

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


def frame(payload: bytes, seq: int) -> bytes:
    """One entry: header (magic, length, sequence, payload CRC, header CRC) and payload."""
    head = _CHECKED_HEAD.pack(ENTRY_MAGIC, len(payload), seq, zlib.crc32(payload))
    return b"".join((head, zlib.crc32(head).to_bytes(4, "big"), payload))


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    seq: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + ENTRY_HEADER.size + len(self.payload)


def check_header(head: bytes | memoryview) -> tuple[int, int, int] | None:
    """(length, sequence, payload crc) of a 24-byte header whose magic and CRC check, else None."""
    if len(head) < ENTRY_HEADER.size:
        return None
    magic, length, seq, payload_crc, head_crc = ENTRY_HEADER.unpack_from(head)
    if magic != ENTRY_MAGIC or length > MAX_ENTRY_BYTES or zlib.crc32(head[:20]) != head_crc:
        return None
    return length, seq, payload_crc


class SegmentFile:
    """Positional reads of one segment through a window, so entries are parsed from memory."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._base = 0
        self._data = b""

    def close(self) -> None:
        os.close(self._fd)

    def get(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end of the file)."""
        start = offset - self._base
        if start < 0 or start + length > len(self._data):
            self._base, self._data = offset, os.pread(self._fd, max(length, WINDOW_BYTES), offset)
            start = 0
        return self._data[start : start + length]

    def entry_at(self, offset: int, limit: int) -> Entry | None:
        """The intact entry starting at ``offset`` and ending at or before ``limit``, else None."""
        checked = check_header(self.get(offset, ENTRY_HEADER.size))
        if checked is None:
            return None
        length, seq, payload_crc = checked
        if offset + ENTRY_HEADER.size + length > limit:
            return None
        payload = self.get(offset + ENTRY_HEADER.size, length)
        return Entry(offset, seq, payload) if zlib.crc32(payload) == payload_crc else None

    def find_entry(self, start: int, limit: int, budget: int) -> tuple[Entry | None, int]:
        """Search ``[start, limit)`` for the next intact entry, looking at about ``budget`` bytes.

        Returns the entry (or None) and where the search stopped: the entry's offset, ``limit``,
        or, when the budget ran out first, the position to continue from.
        """
        position, searched = start, 0
        while position < limit and searched < budget:
            window = self.get(position, min(WINDOW_BYTES, limit - position))
            found = window.find(ENTRY_MAGIC)
            while found >= 0:
                entry = self.entry_at(position + found, limit)
                if entry is not None:
                    return entry, entry.offset
                found = window.find(ENTRY_MAGIC, found + 1)
            last = position + len(window) >= limit  # else overlap: a magic may cross the window's end
            step = len(window) if last else max(len(window) - (len(ENTRY_MAGIC) - 1), 1)
            position += step
            searched += step
        return None, min(position, limit)

    def last_entry(self, size: int) -> tuple[Entry | None, int | None]:
        """The last intact entry of a segment of ``size`` bytes, searched backwards, and the offset of
        an incomplete entry after it (a valid header whose payload runs past the end), if any."""
        end, torn = size, None
        while end > 0:
            start = max(0, end - WINDOW_BYTES)
            window = os.pread(self._fd, end - start + ENTRY_HEADER.size, start)
            found = window.rfind(ENTRY_MAGIC, 0, end - start + len(ENTRY_MAGIC) - 1)
            while found >= 0:
                offset = start + found
                checked = check_header(self.get(offset, ENTRY_HEADER.size))
                if checked is not None and offset + ENTRY_HEADER.size + checked[0] > size:
                    torn = offset  # searching backwards: the earliest one after the last intact entry
                elif checked is not None and (entry := self.entry_at(offset, size)) is not None:
                    return entry, torn
                found = window.rfind(ENTRY_MAGIC, 0, found)
            end = start
        return None, torn


def is_v1_segment(handle: BinaryIO) -> bool:
    """A non-empty segment in the previous format: its first entry checks as a v1 entry."""
    handle.seek(0)
    if handle.read(len(ENTRY_MAGIC)) == ENTRY_MAGIC:
        return False
    handle.seek(0)
    return read_v1_entry(handle) is not None


def read_v1_entry(handle: BinaryIO) -> bytes | None:
    """The next intact v1 payload, or ``None`` at the end, a torn tail or a bad entry."""
    header = handle.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    length, crc = FRAME_HEADER.unpack(header)
    if length > MAX_ENTRY_BYTES or length < _RECORD_HEAD.size:  # an empty entry is zeros, not a record
        return None
    payload = handle.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload
