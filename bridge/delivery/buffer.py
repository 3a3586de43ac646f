"""Bounded buffers between the gateway reader and the publisher, with a policy per class.

Market data (:attr:`EventClass.MARKET_DATA`) is held in arrival order up to
``max_market_events``. Once that full (the sink is backlogged), a new record for a
(destination, key) that is still waiting replaces the waiting one in place: the newest
state wins, a fresh value is never replaced by an older one (by ``updated_ms``, then
arrival order), per-key order holds and every conflation is counted. If every waiting
record has a different key, the oldest is dropped and counted.

Every other class is critical and never dropped. Records wait in memory up to
``max_critical_events``; beyond that the oldest spill to the on-disk :class:`Spool`,
which always holds records older than the ones in memory, so reading the spool first
and memory second keeps the order. When the spool is over its quota (or absent, or the
disk fails) memory keeps growing and :meth:`DeliveryBuffer.wait_writable` blocks the
gateway reader until the publisher has made room: backpressure, still no loss.

The publisher takes one batch at a time (:meth:`DeliveryBuffer.take`) and acknowledges
it (:meth:`DeliveryBuffer.ack`) once the sink has it. On shutdown
:meth:`DeliveryBuffer.close` writes whatever critical records remain, including an
unacknowledged batch, to the spool in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.delivery.observer import NULL_OBSERVER, DeliveryObserver
from bridge.delivery.spool import Spool, SpoolPosition
from bridge.events import EventClass
from bridge.sinks.base import Record

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Batch:
    """What the publisher sends next: critical records first, then market data."""

    critical: tuple[Record, ...]
    market: tuple[Record, ...]
    from_spool: bool = False
    records: tuple[Record, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", self.critical + self.market)

    def __len__(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class _InFlight:
    batch: Batch
    spool_end: SpoolPosition | None  # set once its critical records are in the spool


class DeliveryBuffer:
    """Both class policies behind one ``put`` / ``take`` / ``ack`` interface (one publisher)."""

    def __init__(
        self,
        *,
        max_market_events: int = 10_000,
        max_critical_events: int = 10_000,
        spool: Spool | None = None,
        observer: DeliveryObserver = NULL_OBSERVER,
    ) -> None:
        if max_critical_events < 1:
            raise ValueError("max_critical_events must be at least 1")
        self.market = MarketDataQueue(max_market_events, observer)
        self.max_critical_events = max_critical_events
        self.spool = spool
        self._observer = observer
        self._critical: deque[Record] = deque()
        self._in_flight: _InFlight | None = None
        self._pending = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self.spooled_events = 0
        self.replayed_events = 0
        self.lost_critical_events = 0  # could not be spooled at shutdown (a full or failed disk)
        if spool is not None and spool.has_unread():
            self._pending.set()

    # ------------------------------------------------------------------ producer side

    def put(self, record: Record) -> None:
        """Accept one record; never blocks and never loses a critical record."""
        if record.event_class is EventClass.MARKET_DATA:
            self.market.put(record)
        else:
            self._put_critical(record)
        self._pending.set()

    def put_many(self, records: Iterable[Record]) -> None:
        """``put`` each record, in order (the publisher is woken once, after the last)."""
        market_class, put_critical = EventClass.MARKET_DATA, self._put_critical
        market: list[Record] = []
        accepted = False
        for record in records:
            if record.event_class is market_class:
                market.append(record)
            else:
                put_critical(record)
                accepted = True
        if market:
            self.market.put_many(market)
            accepted = True
        if accepted:
            self._pending.set()

    def _put_critical(self, record: Record) -> None:
        if self._closed:
            self._persist_late(record)
            return
        self._critical.append(right_sized(record))
        if len(self._critical) > self.max_critical_events:
            self._spill_excess()

    @property
    def backpressure(self) -> bool:
        return not self._writable.is_set()

    async def wait_writable(self) -> None:
        """Return at once unless backpressure is on; then wait until it is off."""
        await self._writable.wait()

    # ------------------------------------------------------------------ spilling

    def _spill_excess(self) -> None:
        """Move the oldest memory records (and an unsaved in-flight batch) to the spool."""
        if self.spool is None or not self.spool.has_room():
            self._set_backpressure(True)
            return
        excess = len(self._critical) - self.max_critical_events // 2
        chunk = [self._critical.popleft() for _ in range(excess)]
        try:
            self._save_in_flight()
            self.spool.append(chunk)
        except OSError:
            logger.exception("critical records cannot be spooled; holding them in memory")
            self._critical.extendleft(reversed(chunk))
            self._set_backpressure(True)
            return
        self._count_spooled(len(chunk))
        if len(self._critical) <= self.max_critical_events:
            self._set_backpressure(False)

    def _save_in_flight(self) -> None:
        """An in-flight batch from memory is older than anything spilled after it: spool it first."""
        in_flight = self._in_flight
        if self.spool is None or in_flight is None or in_flight.spool_end is not None:
            return
        if not in_flight.batch.critical:
            return
        end = self.spool.append(in_flight.batch.critical)
        self.spool.skip_to(end)
        in_flight.spool_end = end
        self._count_spooled(len(in_flight.batch.critical))

    def _count_spooled(self, count: int) -> None:
        self.spooled_events += count
        self._observer.spooled(count)
        self._report_spool()

    def _report_spool(self) -> None:
        if self.spool is not None:
            self._observer.spool_usage(self.spool.size_bytes, self.spool.segment_count)

    def _set_backpressure(self, on: bool) -> None:
        if on == self.backpressure:
            return
        if on:
            self._writable.clear()
            logger.warning(
                "backpressure on: %d critical records in memory, spool %s",
                len(self._critical),
                "absent"
                if self.spool is None
                else f"{self.spool.size_bytes} of {self.spool.max_bytes} bytes",
            )
        else:
            self._writable.set()
            logger.warning("backpressure off: %d critical records in memory", len(self._critical))
        self._observer.backpressure(on)

    # ------------------------------------------------------------------ consumer side

    def has_pending(self) -> bool:
        spool_unread = self.spool is not None and self.spool.has_unread()
        return bool(self._critical) or len(self.market) > 0 or spool_unread

    @property
    def memory_events(self) -> int:
        return len(self._critical) + len(self.market)

    @property
    def critical_events(self) -> int:
        return len(self._critical)

    async def wait_pending(self) -> None:
        while not self.has_pending():
            self._pending.clear()
            await self._pending.wait()

    def take(self, max_events: int) -> Batch:
        """The next batch: spooled critical records first, then memory; then market data."""
        if self._in_flight is not None:
            raise RuntimeError("the previous batch was not acknowledged")
        from_spool = self.spool is not None and self.spool.has_unread()
        spool_end: SpoolPosition | None = None
        if self.spool is not None and from_spool:
            critical, spool_end = self.spool.read(max_events)
            self.replayed_events += len(critical)
            self._observer.replayed(len(critical))
        else:
            count = min(max_events, len(self._critical))
            critical = [self._critical.popleft() for _ in range(count)]
        market = self.market.take(max_events - len(critical))
        batch = Batch(tuple(critical), tuple(market), from_spool=from_spool)
        self._in_flight = _InFlight(batch, spool_end)
        self._observer.buffer_depth(EventClass.CRITICAL, len(self._critical))
        self._observer.buffer_depth(EventClass.MARKET_DATA, len(self.market))
        return batch

    def ack(self, batch: Batch) -> None:
        """The sink has every record of ``batch`` (or the dead-letter destination does)."""
        in_flight = self._in_flight
        if in_flight is None or in_flight.batch is not batch:
            raise RuntimeError("ack of a batch that is not in flight")
        self._in_flight = None
        if self.spool is not None and in_flight.spool_end is not None:
            self.spool.commit(in_flight.spool_end)
            self._report_spool()
        if self.backpressure:
            self._relieve()

    def _relieve(self) -> None:
        if len(self._critical) > self.max_critical_events:
            self._spill_excess()
        else:
            self._set_backpressure(False)

    def sync_spool(self) -> None:
        """Give the spool's ``interval_ms`` fsync policy a chance to run while nothing is appended."""
        if self.spool is not None:
            self.spool.sync_if_due()

    # ------------------------------------------------------------------ shutdown

    def close(self) -> int:
        """Persist every critical record still held (in-flight batch first); return how many.

        Market data still waiting is dropped and counted. Critical records put after
        this go straight to the spool.
        """
        self._closed = True
        in_flight, self._in_flight = self._in_flight, None
        held: list[Record] = []
        dropped_market = len(self.market.take(len(self.market)))
        if in_flight is not None:
            dropped_market += len(in_flight.batch.market)
            if in_flight.spool_end is None and not in_flight.batch.from_spool:
                held.extend(in_flight.batch.critical)
        held.extend(self._critical)
        self._critical.clear()
        if dropped_market:
            self._observer.dropped(EventClass.MARKET_DATA, dropped_market)
        saved = self._persist(held)
        self._set_backpressure(False)
        return saved

    def _persist(self, records: list[Record]) -> int:
        if not records:
            return 0
        if self.spool is None:
            logger.error("no spool configured: %d critical records are lost at shutdown", len(records))
            self._observer.dropped(EventClass.CRITICAL, len(records))
            return 0
        if not self.spool.has_room():
            logger.warning("spool over its quota; writing %d critical records anyway", len(records))
        try:
            self.spool.append(records)
            self.spool.sync()
        except OSError as exc:  # a full or failed disk at shutdown: the loss is counted and named
            self._lose(records, exc)
            return 0
        self._count_spooled(len(records))
        return len(records)

    def _lose(self, records: list[Record], exc: OSError) -> None:
        self.lost_critical_events += len(records)
        self._observer.dropped(EventClass.CRITICAL, len(records))
        ids = [dict(record.attributes).get("id", "?") for record in records]
        shown = ", ".join(str(i) for i in ids[:50]) + (f" and {len(ids) - 50} more" if len(ids) > 50 else "")
        logger.error("the spool could not be written (%s): %d critical records are LOST: ids %s",
                     exc, len(records), shown)  # fmt: skip

    def _persist_late(self, record: Record) -> None:
        self._persist([record])
