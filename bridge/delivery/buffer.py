"""Bounded buffers between the gateway reader and the publisher, with a policy per class.

Market data (:attr:`EventClass.MARKET_DATA`) waits in memory in a :class:`MarketDataQueue`
(``market_queue.py``): bounded by ``max_market_events``, conflated per key once full.

Every other class is critical and never dropped. Critical records are written through to the
on-disk :class:`Spool` as they are put, before the publisher can take them: each put is one
append, flushed to the operating system at once and fsynced per the spool's policy, so a
record the bridge has read survives SIGKILL and a restart (which replays the spool from its
committed position). When the sink acknowledges a batch, the spool position after it is
committed (at most every ``COMMIT_INTERVAL_S``; a crash replays what was acknowledged since:
duplicates with the same ids, as at-least-once allows). The spool is the critical queue;
memory holds at most ``max_critical_events`` critical records before backpressure, of two kinds:

- a read cache: the records just written, so the publisher sends the very objects it was given
  instead of reading them back. Records are cached only while the spool has nothing unread
  (every cached record is older than every unread spool entry), so taking the cache first, then
  the spool, keeps the order;
- the records the spool refused (its disk is full or failing, it is over its quota, or there is
  none), in order, behind everything in the spool. They are written again on a timer
  (``RETRY_WRITE_S``), on each acknowledgement, on the next put and when the publisher idles;
  new critical records queue behind them. Once the cache and these together exceed
  ``max_critical_events``, :meth:`DeliveryBuffer.wait_writable` blocks the gateway reader
  (backpressure) until they are written or delivered. Still no loss while the process lives:
  the publisher delivers them from memory meanwhile.

The publisher takes one batch at a time (:meth:`DeliveryBuffer.take`) and acknowledges it
(:meth:`DeliveryBuffer.ack`) once the sink has it. On shutdown :meth:`DeliveryBuffer.close`
writes whatever the spool had refused, including an unacknowledged batch of them, in order.
What still cannot be written then (the disk stayed full through the drain deadline) is lost:
counted in ``lost_critical_events`` and logged once with the ids (the CLI exits 3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bridge.delivery.market_queue import MarketDataQueue, right_sized
from bridge.delivery.observer import NULL_OBSERVER, DeliveryObserver
from bridge.delivery.spool import Spool, SpoolPosition
from bridge.events import EventClass
from bridge.sinks.base import Record

logger = logging.getLogger(__name__)

RETRY_WRITE_S = 0.5  # a spool write that failed (disk full or failing) is tried again this often
# Acknowledged positions are committed at most this often (a commit rewrites the commit file and,
# caught up, starts a new segment: ~0.3 ms on an ordinary disk). A crash replays what was
# acknowledged since the last commit: duplicates with the same ids, as at-least-once allows.
COMMIT_INTERVAL_S = 0.2


def call_later(delay_s: float, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """``callback`` after ``delay_s`` on the running loop; None without one (a synchronous caller)."""
    try:
        return asyncio.get_running_loop().call_later(delay_s, callback)
    except RuntimeError:
        return None


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
class _Cached:
    """Records written through in one append, and the spool position after the last of them."""

    records: list[Record]
    end: SpoolPosition


def take_cached(cached: deque[_Cached], max_events: int) -> tuple[list[Record], SpoolPosition | None]:
    """Up to ``max_events`` cached records, oldest first: whole appends while they fit (the end of
    the last is committed on ack), then a part of the next (its end commits with its rest; a crash
    before that replays the part again, as at-least-once allows)."""
    taken: list[Record] = []
    end: SpoolPosition | None = None
    while cached and len(taken) < max_events:
        chunk, room = cached[0], max_events - len(taken)
        if len(chunk.records) <= room:
            taken.extend(chunk.records)
            end = chunk.end
            cached.popleft()
        else:
            taken.extend(chunk.records[:room])
            chunk.records = chunk.records[room:]
    return taken, end


def log_lost(records: list[Record], exc: OSError) -> None:
    """The one line naming critical records lost for good (the first 50 ids and a count)."""
    ids = [dict(record.attributes).get("id", "?") for record in records]
    shown = ", ".join(str(i) for i in ids[:50]) + (f" and {len(ids) - 50} more" if len(ids) > 50 else "")
    logger.error("the spool could not be written (%s): %d critical records are LOST: ids %s",
                 exc, len(records), shown)  # fmt: skip


@dataclass(slots=True)
class _InFlight:
    batch: Batch
    spool_end: SpoolPosition | None  # commit this on ack (None: nothing to commit)
    unwritten: bool  # its critical records are not in the spool (taken from the refused ones)


class DeliveryBuffer:
    """Both class policies behind one ``put`` / ``take`` / ``ack`` interface (one publisher)."""

    def __init__(
        self,
        *,
        max_market_events: int = 10_000,
        max_critical_events: int = 10_000,
        spool: Spool | None = None,
        observer: DeliveryObserver = NULL_OBSERVER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_critical_events < 1:
            raise ValueError("max_critical_events must be at least 1")
        self.market = MarketDataQueue(max_market_events, observer)
        self.max_critical_events = max_critical_events
        self.spool = spool
        self._observer = observer
        self._clock = clock
        self._cached: deque[_Cached] = deque()
        self._cached_events = 0
        self._unwritten: deque[Record] = deque()  # refused by the spool, newer than all of it
        self._in_flight: _InFlight | None = None
        self._uncommitted: SpoolPosition | None = None  # an acknowledged position not yet committed
        self._write_error: str | None = None  # set while the spool's writes fail
        self._commit_error: str | None = None  # set while its commits fail
        self._retry_at = float("-inf")
        self._retry_timer: asyncio.TimerHandle | None = None
        self._commit_at = float("-inf")
        self._commit_timer: asyncio.TimerHandle | None = None
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
            self._put_critical([record])
        self._pending.set()

    def put_many(self, records: Iterable[Record]) -> None:
        """``put`` each record, in order (critical ones in one spool append; one wake-up)."""
        market_class = EventClass.MARKET_DATA
        market: list[Record] = []
        critical: list[Record] = []
        for record in records:
            (market if record.event_class is market_class else critical).append(record)
        if critical:
            self._put_critical(critical)
        if market:
            self.market.put_many(market)
        if critical or market:
            self._pending.set()

    def _put_critical(self, records: list[Record]) -> None:
        if self._closed:
            self._persist(records)
            return
        for record in records:
            right_sized(record)
        if self._unwritten:
            self._retry_unwritten()
        if self._unwritten or not self._write(records):
            self._unwritten.extend(records)
            self._update_backpressure()

    @property
    def backpressure(self) -> bool:
        return not self._writable.is_set()

    async def wait_writable(self) -> None:
        """Return at once unless backpressure is on; then wait until it is off."""
        await self._writable.wait()

    # ------------------------------------------------------------------ writing through

    def _write(self, records: list[Record]) -> bool:
        """Append ``records`` (after an unwritten in-flight batch) to the spool; False if it refused."""
        spool = self.spool
        if spool is None or not spool.has_room():
            self._schedule_retry()
            return False
        try:
            self._save_in_flight(spool)
            if records:
                cache = not spool.has_unread() and self.critical_events < self.max_critical_events
                end = spool.append(records)
                if cache:
                    spool.skip_to(end)
                    self._cached.append(_Cached(records, end))
                    self._cached_events += len(records)
        except OSError as exc:
            self._write_failed(exc)
            return False
        if records:
            self._count_spooled(len(records))
        if self._write_error is not None:
            logger.warning("the spool is writable again (%s recovered)", self._write_error)
            self._write_error = None
        return True

    def _save_in_flight(self, spool: Spool) -> None:
        """An in-flight batch of refused records is older than anything written after it: write it
        first, past the read position (the publisher holds it), to commit when it is acknowledged."""
        in_flight = self._in_flight
        if in_flight is None or not in_flight.unwritten:
            return
        end = spool.append(in_flight.batch.critical)
        spool.skip_to(end)
        in_flight.spool_end, in_flight.unwritten = end, False
        self._count_spooled(len(in_flight.batch.critical))

    def _write_failed(self, exc: OSError) -> None:
        if self._write_error is None:
            self._write_error = str(exc)
            logger.warning("the spool cannot be written (%s): critical records are held in memory and "
                           "written again every %.1f s", exc, RETRY_WRITE_S)  # fmt: skip
        self._retry_at = self._clock() + RETRY_WRITE_S
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self._retry_timer is None and not self._closed and self.spool is not None:
            self._retry_timer = call_later(RETRY_WRITE_S, self._retry_from_timer)  # else: put/ack/sync retry

    def _retry_from_timer(self) -> None:
        self._retry_timer = None
        self._retry_unwritten()
        if self._unwritten or (self._in_flight is not None and self._in_flight.unwritten):
            self._schedule_retry()

    def _retry_unwritten(self) -> None:
        """Write what the spool refused, oldest first (after a failed write, at most every RETRY_WRITE_S)."""
        in_flight_unwritten = self._in_flight is not None and self._in_flight.unwritten
        if not (self._unwritten or in_flight_unwritten) or self._closed or self.spool is None:
            return
        if self._clock() < self._retry_at:
            return
        records = list(self._unwritten)
        if self._write(records):
            self._unwritten.clear()
            self._update_backpressure()

    def _count_spooled(self, count: int) -> None:
        self.spooled_events += count
        self._observer.spooled(count)
        self._report_spool()

    def _report_spool(self) -> None:
        if self.spool is not None:
            self._observer.spool_usage(self.spool.size_bytes, self.spool.segment_count)

    def _update_backpressure(self) -> None:
        on = bool(self._unwritten) and self.critical_events > self.max_critical_events
        if on == self.backpressure:
            return
        spool = self.spool
        if on:
            self._writable.clear()
            quota = "absent" if spool is None else f"{spool.size_bytes} of {spool.max_bytes} bytes"
            why = self._write_error or quota
            logger.warning("backpressure on: %d critical records not written to the spool (spool %s)",
                           len(self._unwritten), why)  # fmt: skip
        else:
            self._writable.set()
            logger.warning("backpressure off: %d critical records not written to the spool",
                           len(self._unwritten))  # fmt: skip
        self._observer.backpressure(on)

    # ------------------------------------------------------------------ consumer side

    def has_pending(self) -> bool:
        if self._cached or self._unwritten or len(self.market):
            return True
        return self.spool is not None and self.spool.has_unread()

    @property
    def memory_events(self) -> int:
        return self.critical_events + len(self.market)

    @property
    def critical_events(self) -> int:
        """Critical records waiting in memory: the read cache and those the spool refused."""
        return self._cached_events + len(self._unwritten)

    async def wait_pending(self) -> None:
        while not self.has_pending():
            self._pending.clear()
            await self._pending.wait()

    def take(self, max_events: int) -> Batch:
        """The next batch of critical records, oldest first (cache, spool, refused); then market data."""
        if self._in_flight is not None:
            raise RuntimeError("the previous batch was not acknowledged")
        from_spool = unwritten = False
        spool_end: SpoolPosition | None = None
        if self._cached:
            critical, spool_end = take_cached(self._cached, max_events)
            self._cached_events -= len(critical)
        elif self.spool is not None and self.spool.has_unread():
            from_spool = True
            critical, spool_end = self.spool.read(max_events)
            self.replayed_events += len(critical)
            self._observer.replayed(len(critical))
        else:
            popleft = self._unwritten.popleft
            critical = [popleft() for _ in range(min(max_events, len(self._unwritten)))]
            unwritten = bool(critical)
        market = self.market.take(max_events - len(critical))
        batch = Batch(tuple(critical), tuple(market), from_spool=from_spool)
        self._in_flight = _InFlight(batch, spool_end, unwritten)
        self._observer.buffer_depth(EventClass.CRITICAL, self.critical_events)
        self._observer.buffer_depth(EventClass.MARKET_DATA, len(self.market))
        return batch

    def ack(self, batch: Batch) -> None:
        """The sink has every record of ``batch`` (or the dead-letter destination does)."""
        in_flight = self._in_flight
        if in_flight is None or in_flight.batch is not batch:
            raise RuntimeError("ack of a batch that is not in flight")
        self._in_flight = None
        if in_flight.spool_end is not None:
            self._uncommitted = in_flight.spool_end
            if self._clock() >= self._commit_at:
                self._commit()
            elif self._commit_timer is None:
                self._commit_timer = call_later(self._commit_at - self._clock(), self._commit_from_timer)
        self._retry_unwritten()
        self._update_backpressure()

    def _commit(self) -> None:
        """Commit the last acknowledged position (positions only grow; a later one covers earlier)."""
        pos, spool = self._uncommitted, self.spool
        if pos is None or spool is None:
            return
        try:
            spool.commit(pos)
        except OSError as exc:  # at-least-once holds: the position is committed with a later ack
            if self._commit_error is None:  # said once per failure, not at every retry
                logger.warning("the spool position %s cannot be committed yet: %s", pos, exc)
            self._commit_error, self._commit_at = str(exc), self._clock() + RETRY_WRITE_S
            return
        self._uncommitted, self._commit_error, self._commit_at = None, None, self._clock() + COMMIT_INTERVAL_S
        self._report_spool()

    def _commit_from_timer(self) -> None:
        self._commit_timer = None
        if not self._closed:
            self._commit()

    def sync_spool(self) -> None:
        """While nothing is appended: give the ``interval_ms`` fsync policy a chance to run, and write
        what the spool refused (the publisher calls this when idle and between retries)."""
        if self.spool is None:
            return
        try:
            self.spool.sync_if_due()
        except OSError as exc:
            logger.warning("the spool cannot be synced: %s", exc)
        self._retry_unwritten()

    # ------------------------------------------------------------------ shutdown

    def close(self) -> int:
        """Write what the spool refused (an unacknowledged batch of them first) and sync it; return
        how many undelivered critical records this buffer held that are in the spool now.

        Market data still waiting is dropped and counted. Critical records put after this go
        straight to the spool.
        """
        self._closed = True
        for timer in (self._retry_timer, self._commit_timer):
            if timer is not None:
                timer.cancel()
        self._retry_timer = self._commit_timer = None
        in_flight, self._in_flight = self._in_flight, None
        unwritten: list[Record] = []
        in_spool = self._cached_events
        dropped_market = len(self.market.take(len(self.market)))
        if in_flight is not None:
            dropped_market += len(in_flight.batch.market)
            if in_flight.unwritten:
                unwritten.extend(in_flight.batch.critical)
            else:
                in_spool += len(in_flight.batch.critical)
        unwritten.extend(self._unwritten)
        self._unwritten.clear()
        self._cached.clear()
        self._cached_events = 0
        if dropped_market:
            self._observer.dropped(EventClass.MARKET_DATA, dropped_market)
        self._commit()
        saved = self._persist(unwritten)
        self._update_backpressure()
        return in_spool + saved

    def _persist(self, records: list[Record]) -> int:
        """Append and fsync ``records`` at shutdown; what cannot be written is lost, counted and named."""
        if self.spool is None:
            if records:
                logger.error("no spool configured: %d critical records are lost at shutdown", len(records))
                self._observer.dropped(EventClass.CRITICAL, len(records))
            return 0
        if records and not self.spool.has_room():
            logger.warning("spool over its quota; writing %d critical records anyway", len(records))
        try:
            if records:
                self.spool.append(records)
            self.spool.sync()
        except OSError as exc:  # a full or failed disk at shutdown: the loss is counted and named
            self._lose(records, exc)
            return 0
        if records:
            self._count_spooled(len(records))
        return len(records)

    def _lose(self, records: list[Record], exc: OSError) -> None:
        if not records:
            logger.error("the spool could not be synced at shutdown: %s", exc)
            return
        self.lost_critical_events += len(records)
        self._observer.dropped(EventClass.CRITICAL, len(records))
        log_lost(records, exc)
