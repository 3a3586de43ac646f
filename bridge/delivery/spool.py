"""Append-only on-disk spool for critical records, readable across damage.

Layout of the spool directory:

- ``<segment id, 20 digits>.seg``: segment files of framed entries. Each entry is a header
  (magic, length, sequence number, payload CRC, header CRC) and one
  :class:`~bridge.sinks.base.Record`; ``spool_format.py`` has the layout. Segment ids are
  consecutive: rotation adds one.
- ``committed``: ``"<segment> <offset> <sequence> <crc32 of the rest>"``, the position up to which
  every entry was acknowledged by the sink. Segments wholly before it are deleted.

Records are read back in the order they were appended, from the committed position after a
restart. What damage costs:

- A crash can leave an incomplete last entry (a torn tail): only that, the final entry of the
  last segment, is cut off when the spool opens; every complete entry before it is kept.
- Unreadable bytes at the end of the last segment with no intact entry after them (a zeroed or
  overwritten tail) are reported as damage and cut off too: nothing intact is behind them.
- Anywhere else a bad entry is damage, never the end of the data: the reader searches forward for
  the next intact entry (``spool_reader.py``) and goes on; nothing intact is cut from disk. A
  missing segment, copies of entries already read and a gap in the sequence numbers are
  detected. Each region is reported once (:class:`SpoolDamage`: one log line, and ``on_damage``
  for the metric and the lifecycle event) with the records it cost, counted from sequence numbers.
- An unreadable ``committed`` file is reported and every segment is replayed (duplicates, not loss).

Segments in the previous entry format are still read, so an upgrade drains an old spool; the
first append after such a segment starts a new one. The quota (``max_bytes``) is advisory:
:meth:`Spool.has_room` tells the writer whether to append; :meth:`Spool.append` itself never
refuses, so a shutdown can always persist what it holds.

File I/O is small and sequential, so it is synchronous; one owner (the delivery buffer) calls
it from the event loop. Opening reads only the end of the last segment; crossing a damaged
region searches at most ``SCAN_BUDGET_BYTES`` per :meth:`Spool.read` (a 16 MiB zeroed segment
takes a few calls of a few ms each), so the loop keeps serving. That owner appends every
critical record as it is put (write-through: one append per put, flushed to the OS, fsynced per
``fsync``) and commits the position after acknowledged batches.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, get_args

from bridge.delivery.spool_format import (
    ENTRY_HEADER,
    ENTRY_MAGIC,
    MAX_ENTRY_BYTES,
    SegmentFile,
    SpoolCorrupt,
    decode_record,
    encode_record,
    frame,
    is_v1_segment,
    read_v1_entry,
)
from bridge.delivery.spool_reader import SEGMENT_SUFFIX, SpoolDamage, SpoolPosition, SpoolReader, segment_path
from bridge.sinks.base import Record

# The entry format lives in spool_format.py, the reader in spool_reader.py; importers may keep
# using this module.
__all__ = ["COMMIT_FILE", "ENTRY_HEADER", "FSYNC_POLICIES", "MAX_ENTRY_BYTES", "SEGMENT_SUFFIX",
           "FsyncPolicy", "Spool", "SpoolCorrupt", "SpoolDamage", "SpoolPosition", "decode_record",
           "encode_record", "frame"]  # fmt: skip

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval_ms", "never"]
FSYNC_POLICIES: tuple[str, ...] = get_args(FsyncPolicy)

COMMIT_FILE = "committed"
RECENT_DAMAGE = 32  # damage reports kept for status


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
        on_damage: Callable[[SpoolDamage], None] | None = None,
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
        self._on_damage = on_damage
        self.damage_counts: Counter[str] = Counter()  # regions reported since opening, by kind
        self.records_lost = 0  # counted from sequence numbers, since opening
        self.recent_damage: deque[SpoolDamage] = deque(maxlen=RECENT_DAMAGE)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}
        self._v1: set[int] = set()
        self._next_seq = 0
        self._committed, commit_state = self._load_commit()
        self._reader = self._recover(commit_state)

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
        """Where the next appended entry will start (and its sequence number)."""
        return SpoolPosition(self._write_segment, self._sizes.get(self._write_segment, 0), self._next_seq)

    def has_room(self) -> bool:
        return self.size_bytes < self.max_bytes

    def has_unread(self) -> bool:
        return self._reader.pos < self.end

    def _report(self, damage: SpoolDamage) -> None:
        logger.error("spool %s: %s", self.directory, damage.describe())
        self.damage_counts[damage.kind] += 1
        self.records_lost += damage.records_lost or 0
        self.recent_damage.append(damage)
        if self._on_damage is not None:
            self._on_damage(damage)

    # ------------------------------------------------------------------ opening

    def _load_commit(self) -> tuple[SpoolPosition, str]:
        """The acknowledged position, and whether the file was ``found``, ``absent`` or ``unreadable``
        (then every segment is replayed)."""
        path = self.directory / COMMIT_FILE
        try:
            fields = path.read_text().split()
            if len(fields) == 2:  # written by the previous format: no sequence number, no checksum
                return SpoolPosition(int(fields[0]), int(fields[1])), "found"
            segment, offset, seq, crc = fields
            if zlib.crc32(f"{segment} {offset} {seq}".encode()) != int(crc, 16):
                raise ValueError("checksum mismatch")
            return SpoolPosition(int(segment), int(offset), None if seq == "-" else int(seq)), "found"
        except FileNotFoundError:
            return SpoolPosition(0, 0), "absent"
        except (ValueError, UnicodeDecodeError):
            self._report(SpoolDamage("commit_file", 0, 0, path.stat().st_size, 0))
            logger.error("spool commit file %s is unreadable; replaying every segment", path)
            return SpoolPosition(0, 0), "unreadable"

    def _recover(self, commit_state: str) -> SpoolReader:
        for path in self.directory.glob(f"*{SEGMENT_SUFFIX}"):
            if not path.stem.isdigit():
                logger.warning("ignoring %s in the spool directory: not a segment this bridge wrote", path)
                continue
            segment = int(path.stem)
            if segment < self._committed.segment:
                path.unlink()
            else:
                self._sizes[segment] = path.stat().st_size
        for segment in sorted(self._sizes):  # segments in the previous format come first, if any
            if self._sizes[segment]:
                with segment_path(self.directory, segment).open("rb") as handle:
                    if not is_v1_segment(handle):
                        break
                self._v1.add(segment)
        committed = self._committed
        if not self._sizes:
            self._write_segment = committed.segment + 1
            self._next_seq = committed.seq or 0
            return SpoolReader(self.directory, self._sizes, self._v1, self._report, self.end)
        last = max(self._sizes)
        if last in self._v1:
            self._truncate_v1_tail(last)
            self._write_segment, last_seq = last + 1, None  # new entries go to a new segment
        else:
            self._write_segment = last
            last_seq = self._recover_tail(last)
        if last_seq is None:
            last_seq = self._last_seq_before(last)
        self._next_seq = max(last_seq + 1 if last_seq is not None else 0, committed.seq or 0)
        first = min(self._sizes)
        offset = min(committed.offset, self._sizes[first]) if committed.segment == first else 0
        seq = committed.seq
        if commit_state == "absent" and first == 1:  # nothing was ever acknowledged: entries start at 0
            seq = 0
        reader = SpoolReader(self.directory, self._sizes, self._v1, self._report,
                             SpoolPosition(first, offset, seq))  # fmt: skip
        expected_first = committed.segment if committed.segment or committed.offset else 1
        if commit_state != "unreadable" and first > expected_first:
            reader.missing_before(list(range(expected_first, first)))
        logger.info("spool %s opened: %d segments, %d bytes, replay from %s",
                    self.directory, self.segment_count, self.size_bytes, reader.pos)  # fmt: skip
        return reader

    def _recover_tail(self, segment: int) -> int | None:
        """Cut an incomplete final entry (or unreadable bytes with nothing intact after them) off
        the last segment; the sequence number of its last intact entry."""
        path, size = segment_path(self.directory, segment), self._sizes[segment]
        handle = SegmentFile(path)
        try:
            entry, torn = handle.last_entry(size)
            keep = entry.end if entry is not None else 0
            tail = handle.get(keep, size - keep)
        finally:
            handle.close()
        if keep < size:
            if torn == keep or (len(tail) < ENTRY_HEADER.size and ENTRY_MAGIC.startswith(tail[:4])):
                logger.warning("spool segment %s: truncating a torn tail of %d bytes after a crash",
                               path.name, size - keep)  # fmt: skip
            else:
                self._report(SpoolDamage("tail", segment, keep, size - keep))
            os.truncate(path, keep)
            self._sizes[segment] = keep
        return entry.seq if entry is not None else None

    def _last_seq_before(self, segment: int) -> int | None:
        """The last sequence number in earlier segments (the last one holds no intact entry)."""
        for earlier in sorted((s for s in self._sizes if s < segment and s not in self._v1), reverse=True):
            handle = SegmentFile(segment_path(self.directory, earlier))
            try:
                entry, _ = handle.last_entry(self._sizes[earlier])
            finally:
                handle.close()
            if entry is not None:
                return entry.seq
        return None

    def _truncate_v1_tail(self, segment: int) -> None:
        path = segment_path(self.directory, segment)
        good = 0
        with path.open("rb") as handle:
            while read_v1_entry(handle) is not None:
                good = handle.tell()
        if good < self._sizes[segment]:
            logger.warning("spool segment %s: truncating a torn tail of %d bytes after a crash",
                           path.name, self._sizes[segment] - good)  # fmt: skip
            os.truncate(path, good)
            self._sizes[segment] = good

    # ------------------------------------------------------------------ writing

    def _open_writer(self) -> BinaryIO:
        if self._writer is None:
            self._writer = segment_path(self.directory, self._write_segment).open("ab")
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
                framed = frame(encode_record(record), self._next_seq)
                self._open_writer().write(framed)
                self._sizes[self._write_segment] += len(framed)
                self._next_seq += 1
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
        # the error propagates; its owner reports it (once per change, not per retry)
        logger.debug("spool append failed; cutting segments back to %s", start)
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                logger.debug("spool writer close after a failed append also failed")
            self._writer = None
        for segment in [s for s in self._sizes if s > start.segment]:
            self._reader.forget(segment)
            segment_path(self.directory, segment).unlink(missing_ok=True)
            del self._sizes[segment]
        path = segment_path(self.directory, start.segment)
        if path.exists():
            os.truncate(path, start.offset)
        self._sizes[start.segment] = start.offset
        self._write_segment = start.segment
        self._next_seq = start.seq if start.seq is not None else self._next_seq

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
        """Up to ``max_events`` unread records in order, and the position up to which everything was read.

        Crossing a damaged region searches a bounded number of bytes per call, so a call may return
        fewer records (none, even) while :meth:`has_unread` stays true: call again.
        """
        if self._writer is not None:
            self._writer.flush()
        records = self._reader.read(max_events, self.end)
        return records, self._reader.committable

    def skip_to(self, pos: SpoolPosition) -> None:
        """Move the read position forward (entries written by the caller it already holds)."""
        self._reader.skip_to(pos)

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
            self._reader.forget(segment)
            segment_path(self.directory, segment).unlink(missing_ok=True)
            del self._sizes[segment]
            self._v1.discard(segment)

    def _reset_after(self, pos: SpoolPosition) -> None:
        """Everything was acknowledged: start an empty segment and drop the rest."""
        committed = SpoolPosition(pos.segment + 1, 0, self._next_seq)
        self._write_commit(committed)  # first: if it fails, nothing changed
        self._close_writer(sync=False)
        next_segment = committed.segment
        self._committed = committed
        self._reader.reset(self._committed)
        for segment in list(self._sizes):
            segment_path(self.directory, segment).unlink(missing_ok=True)
        self._sizes.clear()
        self._v1.clear()
        self._write_segment = next_segment

    def _write_commit(self, pos: SpoolPosition) -> None:
        path = self.directory / COMMIT_FILE
        tmp = path.with_suffix(".tmp")
        seq = pos.seq
        text = f"{pos.segment} {pos.offset} {'-' if seq is None else seq}"
        with tmp.open("w") as handle:
            handle.write(f"{text} {zlib.crc32(text.encode()):08x}\n")
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

    def close(self) -> None:
        self._close_writer(sync=self._fsync != "never")
        self._reader.close()
