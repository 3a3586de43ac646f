"""Market data waiting for the publisher: arrival order, conflated per (destination, key) once full.

Held in arrival order up to ``max_events``. Once full (the sink is backlogged), a new record for a
(destination, key) that is still waiting replaces the waiting one in place: the newest state wins,
a fresh value is never replaced by an older one (by ``updated_ms``, then arrival order), per-key
order holds and every conflation is counted. If every waiting record has a different key, the
oldest is dropped and counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from bridge.delivery.observer import NULL_OBSERVER, DeliveryObserver
from bridge.events import EventClass
from bridge.sinks.base import Record

_ConflationKey = tuple[str, bytes]

# orjson writes each document into a buffer of about 8 KiB and hands that allocation over as the
# ``bytes`` object: a 700-byte quote kept waiting holds 8 KiB (measured: 8.5 KB per buffered quote,
# tests/bench/bench_buffer_memory.py). A record that waits is copied to an exact-size object:
# every critical record (low volume), and market data once more than this many already wait
# (the sink is behind; a sink that keeps pace takes records before they cost anything).
RIGHT_SIZE_AFTER_EVENTS = 1024


def right_sized(record: Record) -> Record:
    """``record`` with its data in an allocation of its own size (see ``RIGHT_SIZE_AFTER_EVENTS``)."""
    record.data = bytes(memoryview(record.data))
    return record


def is_older(candidate: Record, current: Record) -> bool:
    """True when ``candidate`` carries older data than ``current`` (equal times: arrival wins)."""
    return (
        candidate.updated_ms is not None
        and current.updated_ms is not None
        and candidate.updated_ms < current.updated_ms
    )


class _Slot:
    __slots__ = ("key", "record")

    def __init__(self, key: _ConflationKey, record: Record) -> None:
        self.key = key
        self.record = record


class MarketDataQueue:
    """Arrival-ordered market data, conflated per (destination, key) once full.

    The per-key index that conflation needs is only kept while it may be needed: below
    ``max_events`` records wait as they are (no slot, no key, no dict entry each); the first
    record that finds the queue full indexes it, and a take that brings it to half full or
    less drops the index again.
    """

    def __init__(self, max_events: int, observer: DeliveryObserver = NULL_OBSERVER) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._observer = observer
        self._records: deque[Record] = deque()  # while not indexed
        self._slots: deque[_Slot] = deque()  # while indexed
        self._latest: dict[_ConflationKey, _Slot] = {}
        self._indexed = False
        self.conflated_events = 0
        self.dropped_events = 0

    def __len__(self) -> int:
        return len(self._slots) if self._indexed else len(self._records)

    def put(self, record: Record) -> None:
        if len(self) >= RIGHT_SIZE_AFTER_EVENTS:
            right_sized(record)
        if not self._indexed:
            if len(self._records) < self.max_events:
                self._records.append(record)
                return
            self._index()
        key = (record.destination, record.key)
        if len(self._slots) >= self.max_events and not self._conflate(key, record):
            return
        slot = _Slot(key, record)
        self._slots.append(slot)
        self._latest[key] = slot

    def put_many(self, records: Iterable[Record]) -> None:
        """``put`` each record, in order; while there is room, without a call per record."""
        if not self._indexed:
            records = records if isinstance(records, list) else list(records)
            room = self.max_events - len(self._records)
            if len(records) <= room:
                if len(self._records) + len(records) > RIGHT_SIZE_AFTER_EVENTS:
                    records = [right_sized(record) for record in records]
                self._records.extend(records)
                return
            self._records.extend(records[:room])
            records = records[room:]
        for record in records:  # indexed (or about to be): conflation is put's job
            self.put(record)

    def _index(self) -> None:
        """Give every waiting record its slot and remember each key's last one."""
        self._slots = deque(_Slot((record.destination, record.key), record) for record in self._records)
        self._records = deque()
        self._latest = {slot.key: slot for slot in self._slots}
        self._indexed = True

    def _unindex(self) -> None:
        self._records = deque(slot.record for slot in self._slots)
        self._slots = deque()
        self._latest = {}
        self._indexed = False

    def _conflate(self, key: _ConflationKey, record: Record) -> bool:
        """Backlogged: merge into the waiting slot; True when ``record`` still needs a new slot."""
        waiting = self._latest.get(key)
        if waiting is not None:
            if not is_older(record, waiting.record):
                waiting.record = record
            self._count_conflated(1)
            return False
        if len(self._slots) > len(self._latest):
            self._compact()
        if len(self._slots) >= self.max_events:
            oldest = self._slots.popleft()
            if self._latest.get(oldest.key) is oldest:
                del self._latest[oldest.key]
            self.dropped_events += 1
            self._observer.dropped(EventClass.MARKET_DATA, 1)
        return True

    def _compact(self) -> None:
        """Keep one slot per key (its last position) holding the newest of its records."""
        kept: deque[_Slot] = deque()
        for slot in self._slots:
            latest = self._latest[slot.key]
            if latest is slot:
                kept.append(slot)
            elif is_older(latest.record, slot.record):
                latest.record = slot.record
        merged = len(self._slots) - len(kept)
        self._slots = kept
        self._count_conflated(merged)

    def _count_conflated(self, count: int) -> None:
        self.conflated_events += count
        self._observer.conflated(EventClass.MARKET_DATA, count)

    def take(self, max_events: int) -> list[Record]:
        if not self._indexed:
            records = self._records
            if max_events >= len(records):
                everything = list(records)
                records.clear()
                return everything
            popleft = records.popleft
            return [popleft() for _ in range(max_events)]
        slots, latest = self._slots, self._latest
        taken: list[Record]
        if max_events >= len(slots):  # everything (the publisher keeps pace): no per-slot upkeep
            taken = [slot.record for slot in slots]
            slots.clear()
            self._unindex()
            return taken
        taken = []
        for _ in range(max_events):
            slot = slots.popleft()
            if latest.get(slot.key) is slot:
                del latest[slot.key]
            taken.append(slot.record)
        if len(slots) <= self.max_events // 2:
            self._unindex()
        return taken
