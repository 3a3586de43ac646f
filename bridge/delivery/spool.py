"""Append-only on-disk spool for critical records.

Layout of the spool directory:

- ``<segment id, 20 digits>.seg``: segment files of framed entries. Each entry is
  ``[u32 length][u32 crc32 of payload][payload]`` (big-endian); the payload is one
  :class:`~bridge.sinks.base.Record` serialized by :func:`encode_record`
  (``spool_format.py``).
- ``committed``: ``"<segment> <offset>"``, the position up to which every entry was
  acknowledged by the sink. Segments wholly before it are deleted.

Records are read back in the order they were appended, from the committed position
after a restart. A crash can leave a partial last entry (a torn tail); opening the
spool truncates it and keeps every complete entry before it. The quota
(``max_bytes``) is advisory: :meth:`Spool.has_room` tells the writer whether to
append; :meth:`Spool.append` itself never refuses, so a shutdown can always persist
what it holds.

File I/O is small and sequential, so it is synchronous; one owner (the delivery
buffer) calls it from the event loop. That owner appends every critical record as it
is put (write-through: one append per put, flushed to the OS, fsynced per ``fsync``)
and commits the position after each acknowledged batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, get_args

from bridge.delivery.spool_format import (
    FRAME_HEADER,
    MAX_ENTRY_BYTES,
    SpoolCorrupt,
    decode_record,
    encode_record,
    frame,
    read_entry,
)
from bridge.sinks.base import Record

# The entry format lives in spool_format.py; importers may keep using this module.
__all__ = ["COMMIT_FILE", "FRAME_HEADER", "FSYNC_POLICIES", "MAX_ENTRY_BYTES", "SEGMENT_SUFFIX",
           "FsyncPolicy", "Spool", "SpoolCorrupt", "SpoolPosition", "decode_record", "encode_record",
           "frame"]  # fmt: skip

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval_ms", "never"]
FSYNC_POLICIES: tuple[str, ...] = get_args(FsyncPolicy)

SEGMENT_SUFFIX = ".seg"
COMMIT_FILE = "committed"


@dataclass(frozen=True, slots=True, order=True)
class SpoolPosition:
    """A byte offset in one segment: where the next entry starts."""

    segment: int
    offset: int


def _segment_name(segment: int) -> str:
    return f"{segment:020d}{SEGMENT_SUFFIX}"


class Spool:
    """Durable FIFO of records on disk; see the module docstring for the format."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        segment_bytes: int = 16 << 20,
        fsync: FsyncPolicy = "interval_ms",
        fsync_interval_ms: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._fsync_interval_s = fsync_interval_ms / 1000
        self._clock = clock
        self._last_sync = clock()
        self._unsynced = False
        self._writer: BinaryIO | None = None
        self._reader: tuple[int, BinaryIO] | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}
        self._committed = self._load_commit()
        self._recover()

    # ------------------------------------------------------------------ state

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def segment_count(self) -> int:
        return len(self._sizes)

    @property
    def committed(self) -> SpoolPosition:
        return self._committed

    @property
    def end(self) -> SpoolPosition:
        """Where the next appended entry will start."""
        return SpoolPosition(self._write_segment, self._sizes.get(self._write_segment, 0))

    def has_room(self) -> bool:
        return self.size_bytes < self.max_bytes

    def has_unread(self) -> bool:
        return self._read_pos < self.end

    # ------------------------------------------------------------------ opening

    def _load_commit(self) -> SpoolPosition:
        path = self.directory / COMMIT_FILE
        try:
            segment, offset = path.read_text().split()
            return SpoolPosition(int(segment), int(offset))
        except FileNotFoundError:
            return SpoolPosition(0, 0)
        except ValueError:
            logger.error("spool commit file %s is unreadable; replaying every segment", path)
            return SpoolPosition(0, 0)

    def _recover(self) -> None:
        for path in self.directory.glob(f"*{SEGMENT_SUFFIX}"):
            if not path.stem.isdigit():
                logger.warning("ignoring %s in the spool directory: not a segment this bridge wrote", path)
                continue
            segment = int(path.stem)
            if segment < self._committed.segment:
                path.unlink()
            else:
                self._sizes[segment] = path.stat().st_size
        if not self._sizes:
            self._write_segment = self._committed.segment + 1
            self._read_pos = SpoolPosition(self._write_segment, 0)
            return
        self._write_segment = max(self._sizes)
        self._truncate_torn_tail(self._write_segment)
        first = min(self._sizes)
        if self._committed.segment == first:
            offset = min(self._committed.offset, self._sizes[first])
            self._read_pos = SpoolPosition(first, offset)
        else:
            self._read_pos = SpoolPosition(first, 0)
        logger.info(
            "spool %s opened: %d segments, %d bytes, replay from %s",
            self.directory,
            self.segment_count,
            self.size_bytes,
            self._read_pos,
        )

    def _truncate_torn_tail(self, segment: int) -> None:
        path = self.directory / _segment_name(segment)
        good = 0
        with path.open("rb") as handle:
            while read_entry(handle) is not None:
                good = handle.tell()
        if good < self._sizes[segment]:
            logger.warning(
                "spool segment %s: truncating a torn tail of %d bytes after a crash",
                path.name,
                self._sizes[segment] - good,
            )
            os.truncate(path, good)
            self._sizes[segment] = good

    # ------------------------------------------------------------------ writing

    def _open_writer(self) -> BinaryIO:
        if self._writer is None:
            path = self.directory / _segment_name(self._write_segment)
            self._writer = path.open("ab")
            self._sizes.setdefault(self._write_segment, 0)
        return self._writer

    def _rotate(self) -> None:
        self._close_writer(sync=self._fsync != "never")
        self._write_segment += 1

    def append(self, records: Sequence[Record]) -> SpoolPosition:
        """Append records in order and return the end position after them.

        On an I/O error (disk full) the segment is cut back to where it was, so no
        partial entry is left behind, and the error propagates.
        """
        start = self.end
        try:
            for record in records:
                if self._sizes.get(self._write_segment, 0) >= self._segment_bytes:
                    self._rotate()
                framed = frame(encode_record(record))
                self._open_writer().write(framed)
                self._sizes[self._write_segment] += len(framed)
            self._after_append()
        except OSError:
            self._undo_append(start)
            raise
        return self.end

    def _after_append(self) -> None:
        writer = self._open_writer()
        writer.flush()
        self._unsynced = True
        if self._fsync == "always":
            self.sync()
        elif self._fsync == "interval_ms":
            self.sync_if_due()

    def sync_if_due(self) -> None:
        """Under ``interval_ms``, fsync written data once the interval has passed since the last."""
        if self._fsync == "interval_ms" and self._clock() - self._last_sync >= self._fsync_interval_s:
            self.sync()

    def _undo_append(self, start: SpoolPosition) -> None:
        logger.error("spool append failed; cutting segments back to %s", start)
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                logger.debug("spool writer close after a failed append also failed")
            self._writer = None
        for segment in [s for s in self._sizes if s > start.segment]:
            (self.directory / _segment_name(segment)).unlink(missing_ok=True)
            del self._sizes[segment]
        path = self.directory / _segment_name(start.segment)
        if path.exists():
            os.truncate(path, start.offset)
        self._sizes[start.segment] = start.offset
        self._write_segment = start.segment

    def sync(self) -> None:
        """Flush and fsync what was written since the last sync (unless the policy is ``never``)."""
        if self._writer is None or not self._unsynced:
            return
        self._writer.flush()
        if self._fsync != "never":
            os.fsync(self._writer.fileno())
        self._last_sync = self._clock()
        self._unsynced = False

    # ------------------------------------------------------------------ reading

    def read(self, max_events: int) -> tuple[list[Record], SpoolPosition]:
        """Up to ``max_events`` unread records in order, and the position after them."""
        if self._writer is not None:
            self._writer.flush()
        records: list[Record] = []
        while len(records) < max_events and self.has_unread():
            handle = self._reader_at(self._read_pos)
            payload = read_entry(handle)
            if payload is None:
                self._end_of_segment(handle.tell())
                continue
            try:
                records.append(decode_record(payload))
            except SpoolCorrupt:
                logger.exception("spool entry at %s does not decode; skipping it", self._read_pos)
            self._read_pos = SpoolPosition(self._read_pos.segment, handle.tell())
        self._skip_finished_segment()
        return records, self._read_pos

    def _reader_at(self, pos: SpoolPosition) -> BinaryIO:
        if self._reader is None or self._reader[0] != pos.segment:
            self._close_reader()
            self._reader = (pos.segment, (self.directory / _segment_name(pos.segment)).open("rb"))
        handle = self._reader[1]
        handle.seek(pos.offset)
        return handle

    def _end_of_segment(self, at: int) -> None:
        segment = self._read_pos.segment
        if self._read_pos.offset < self._sizes.get(segment, 0):
            remaining = self._sizes[segment] - self._read_pos.offset
            logger.error("spool segment %s corrupt at offset %d; skipping %d bytes", segment, at, remaining)
        self._read_pos = self._after_segment(segment)

    def _skip_finished_segment(self) -> None:
        segment, offset = self._read_pos.segment, self._read_pos.offset
        if segment != self._write_segment and offset >= self._sizes.get(segment, 0):
            self._read_pos = self._after_segment(segment)

    def _after_segment(self, segment: int) -> SpoolPosition:
        later = [s for s in self._sizes if s > segment]
        return SpoolPosition(min(later), 0) if later else self.end

    def skip_to(self, pos: SpoolPosition) -> None:
        """Move the read position forward (entries written by the caller it already holds)."""
        self._read_pos = max(self._read_pos, pos)
        self._skip_finished_segment()

    # ------------------------------------------------------------------ acknowledging

    def commit(self, pos: SpoolPosition) -> None:
        """Everything before ``pos`` was acknowledged: persist that and delete spent segments.

        If the commit file cannot be written (``OSError``, e.g. a full disk) nothing changes, so
        the same or a later position can be committed again."""
        if pos <= self._committed:
            return
        if pos >= self.end and pos.segment == self._write_segment:
            self._reset_after(pos)
            return
        self._write_commit(pos)
        self._committed = pos
        for segment in [s for s in self._sizes if s < pos.segment]:
            if self._reader is not None and self._reader[0] == segment:
                self._close_reader()
            (self.directory / _segment_name(segment)).unlink(missing_ok=True)
            del self._sizes[segment]

    def _reset_after(self, pos: SpoolPosition) -> None:
        """Everything was acknowledged: start an empty segment and drop the rest."""
        next_segment = pos.segment + 1
        self._write_commit(SpoolPosition(next_segment, 0))  # first: if it fails, nothing changed
        self._close_writer(sync=False)
        self._close_reader()
        self._committed = SpoolPosition(next_segment, 0)
        for segment in list(self._sizes):
            (self.directory / _segment_name(segment)).unlink(missing_ok=True)
        self._sizes.clear()
        self._write_segment = next_segment
        self._read_pos = SpoolPosition(next_segment, 0)

    def _write_commit(self, pos: SpoolPosition) -> None:
        path = self.directory / COMMIT_FILE
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            handle.write(f"{pos.segment} {pos.offset}\n")
            if self._fsync == "always":
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)

    # ------------------------------------------------------------------ closing

    def _close_writer(self, *, sync: bool) -> None:
        if self._writer is not None:
            self._writer.flush()
            if sync:
                os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None
            self._unsynced = False

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    def close(self) -> None:
        self._close_writer(sync=self._fsync != "never")
        self._close_reader()
