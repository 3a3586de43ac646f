"""Reading a spool forward, entry by entry, across damage (the spool's read side).

:class:`SpoolReader` follows entries by their lengths; an entry whose header or CRC does not check
starts a damaged region, and the reader searches forward for the next intact entry
(:meth:`~bridge.delivery.spool_format.SegmentFile.find_entry`), into later segments if need be.
Each region is reported once, when the next intact entry (or the end of the spool) tells how many
records it held: the sequence numbers of the entries on either side give the count exactly. A
segment id missing between two present ones (rotation adds one), an entry whose sequence number
is already behind the reader (a copy of a region) and a gap in the sequence without unreadable
bytes are reported the same way. The search looks at a bounded number of bytes per :meth:`read`
call, so a large damaged region costs several calls, never one long block of the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from bridge.delivery.spool_format import Entry, SegmentFile, SpoolCorrupt, decode_record, read_v1_entry
from bridge.sinks.base import Record

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
SCAN_BUDGET_BYTES = 4 << 20  # bytes searched for the next intact entry per read() call

DAMAGE_KINDS = ("corrupt", "missing_segment", "sequence_gap", "duplicate", "tail", "commit_file")


@dataclass(frozen=True, slots=True, order=True)
class SpoolPosition:
    """A byte offset in one segment: where the next entry starts (and its sequence number, if known)."""

    segment: int
    offset: int
    seq: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SpoolDamage:
    """One damaged region of a spool, as reported once (log line, metric, lifecycle event).

    ``kind``: ``corrupt`` (unreadable bytes between intact entries), ``missing_segment``,
    ``sequence_gap`` (entries gone without unreadable bytes, e.g. a cut at an entry boundary),
    ``duplicate`` (copies of entries already read, skipped), ``tail`` (unreadable bytes at the end
    of the last segment with no intact entry after them, cut off at open), ``commit_file`` (the
    acknowledged position is unreadable: every segment is replayed). ``records_lost`` is exact
    from sequence numbers, or None where nothing tells (a ``tail``, a segment in the old format).
    """

    kind: str
    segment: int
    offset: int
    bytes: int = 0
    records_lost: int | None = None
    missing_segments: tuple[int, ...] = ()
    duplicates: int = 0

    def describe(self) -> str:
        lost = "an unknown number of" if self.records_lost is None else str(self.records_lost)
        parts = [f"spool damage ({self.kind}) at segment {self.segment} offset {self.offset}:",
                 f"{self.bytes} bytes unreadable, {lost} records lost"]  # fmt: skip
        if self.missing_segments:
            parts.append(f"segments {self.missing_segments[0]}..{self.missing_segments[-1]} missing")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicated entries skipped")
        return " ".join(parts) if len(parts) < 3 else f"{parts[0]} {', '.join(parts[1:])}"


@dataclass(slots=True)
class _Region:
    """A damaged region being crossed: where it began and the sequence number expected there."""

    segment: int
    offset: int
    expect: int | None
    bytes: int = 0
    missing: list[int] = field(default_factory=list)
    duplicates: int = 0

    def kind(self) -> str:
        if self.missing:
            return "missing_segment"
        return "corrupt" if self.bytes else "duplicate" if self.duplicates else "sequence_gap"


def segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{segment:020d}{SEGMENT_SUFFIX}"


class SpoolReader:
    """The read position of a spool and the damaged region it is crossing, if any."""

    def __init__(
        self, directory: Path, sizes: dict[int, int], v1_segments: set[int],
        report: Callable[[SpoolDamage], None], start: SpoolPosition,
    ) -> None:  # fmt: skip
        self._directory = directory
        self._sizes = sizes  # the spool's own table: complete bytes per segment
        self._v1 = v1_segments
        self._report = report
        self.pos = start
        self._region: _Region | None = None
        self._file: tuple[int, SegmentFile] | None = None
        self._v1_file: tuple[int, BinaryIO] | None = None

    @property
    def committable(self) -> SpoolPosition:
        """Where everything before was read: the start of a region still being crossed."""
        region = self._region
        return self.pos if region is None else SpoolPosition(region.segment, region.offset, region.expect)

    def missing_before(self, segments: list[int]) -> None:
        """Segments absent before the first one present (the acknowledged position pointed there)."""
        if segments:
            self._region = _Region(segments[0], 0, self.pos.seq, missing=segments)

    def skip_to(self, pos: SpoolPosition) -> None:
        if pos > self.pos:
            self.pos = pos

    def read(self, max_events: int, end: SpoolPosition, budget: int = SCAN_BUDGET_BYTES) -> list[Record]:
        """Up to ``max_events`` records; searches at most about ``budget`` bytes across damage."""
        records: list[Record] = []
        searched = 0
        while len(records) < max_events and self.pos < end and searched < budget:
            segment, offset = self.pos.segment, self.pos.offset
            size = self._sizes.get(segment, 0)
            if offset >= size:
                self._next_segment(end)
            elif segment in self._v1:
                self._read_v1(segment, size, records)
            elif self._region is None:
                entry = self._segment(segment).entry_at(offset, size)
                if entry is None:
                    self._region = _Region(segment, offset, self.pos.seq, bytes=1)
                    self.pos = SpoolPosition(segment, offset + 1, self.pos.seq)
                else:
                    searched += self._accept(segment, entry, records)
            else:
                entry, stop = self._segment(segment).find_entry(offset, size, budget - searched)
                searched += stop - offset
                self._region.bytes += stop - offset
                self.pos = SpoolPosition(segment, stop, self.pos.seq)
                if entry is not None:
                    searched += self._accept(segment, entry, records)
        if self.pos >= end:
            self._end_region(end.seq)
        elif self.pos.segment != end.segment and self.pos.offset >= self._sizes.get(self.pos.segment, 0):
            self._next_segment(end)
        return records

    def _accept(self, segment: int, entry: Entry, records: list[Record]) -> int:
        """Take an intact entry; the bytes it counts against the search budget (a skipped copy's)."""
        expect = self.pos.seq
        self.pos = SpoolPosition(segment, entry.end, expect)
        if expect is not None and entry.seq < expect:  # a copy of an entry already read
            if self._region is None:
                self._region = _Region(segment, entry.offset, expect)
            self._region.duplicates += 1
            return entry.end - entry.offset
        if self._region is None and expect is not None and entry.seq > expect:
            self._region = _Region(segment, entry.offset, expect)
        self._end_region(entry.seq)
        self.pos = SpoolPosition(segment, entry.end, entry.seq + 1)
        try:
            records.append(decode_record(entry.payload))
        except SpoolCorrupt as exc:  # intact bytes, but not a record this version can read
            logger.error("spool entry at segment %d offset %d does not decode (%s); skipping it",
                         segment, entry.offset, exc)  # fmt: skip
            self._report(SpoolDamage("corrupt", segment, entry.offset, entry.end - entry.offset, 1))
        return 0

    def _end_region(self, seq: int | None) -> None:
        """The region being crossed ends before an entry with sequence number ``seq``: report it."""
        region, self._region = self._region, None
        if region is None:
            return
        lost = seq - region.expect if seq is not None and region.expect is not None else None
        self._report(SpoolDamage(region.kind(), region.segment, region.offset, region.bytes,
                                 lost, tuple(region.missing), region.duplicates))  # fmt: skip

    def _next_segment(self, end: SpoolPosition) -> None:
        segment = self.pos.segment
        self._close_files()
        later = [s for s in self._sizes if s > segment]
        following = min(later) if later else end.segment
        if following > segment + 1:
            if self._region is None:
                self._region = _Region(segment + 1, 0, self.pos.seq)
            self._region.missing.extend(range(segment + 1, following))
        self.pos = SpoolPosition(following, 0, self.pos.seq)

    def _read_v1(self, segment: int, size: int, records: list[Record]) -> None:
        if self._v1_file is None or self._v1_file[0] != segment:
            self._close_files()
            self._v1_file = (segment, segment_path(self._directory, segment).open("rb"))
        handle = self._v1_file[1]
        handle.seek(self.pos.offset)
        payload = read_v1_entry(handle)
        record = None
        if payload is not None and handle.tell() <= size:
            try:
                record = decode_record(payload)
            except SpoolCorrupt:
                record = None
        if record is None:  # the old format cannot resynchronize: the rest of the segment is lost
            self._region = self._region or _Region(segment, self.pos.offset, None)
            self._region.bytes += size - self.pos.offset
            self._region.expect = None
            self.pos = SpoolPosition(segment, size, None)
            return
        self._end_region(None)
        self.pos = SpoolPosition(segment, handle.tell(), self.pos.seq)
        records.append(record)

    def _segment(self, segment: int) -> SegmentFile:
        if self._file is None or self._file[0] != segment:
            self._close_files()
            self._file = (segment, SegmentFile(segment_path(self._directory, segment)))
        return self._file[1]

    def forget(self, segment: int) -> None:
        """``segment`` is about to be deleted or rewritten: drop any handle on it."""
        if (self._file and self._file[0] == segment) or (self._v1_file and self._v1_file[0] == segment):
            self._close_files()

    def reset(self, pos: SpoolPosition) -> None:
        self._close_files()
        self._region = None
        self.pos = pos

    def _close_files(self) -> None:
        if self._file is not None:
            self._file[1].close()
            self._file = None
        if self._v1_file is not None:
            self._v1_file[1].close()
            self._v1_file = None

    def close(self) -> None:
        self._close_files()


def with_seq(pos: SpoolPosition, seq: int | None) -> SpoolPosition:
    return replace(pos, seq=seq)
