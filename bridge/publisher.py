"""Drains the delivery buffer into a sink in batches, retrying what may be retried.

One publisher per sink, one batch in flight at a time, so per-key order holds
through retries and spool replay (the buffer hands out spooled critical records
before newer ones). Publish cycles run on a cadence: a cycle starts at most every
``linger_ms``. A record that arrives after a quiet spell of at least that long (a
lone order update, the first quote of a burst) goes out at once; records that
trickle in meanwhile wait for the next tick of the cadence, at most ``linger_ms``,
and go out together in one publish (one produce request, one pipeline), so a feed
of a few thousand frames a second costs a few hundred publish cycles, not one per
frame. A batch that fills up (``max_batch_events``) or a critical record (orders,
executions) ends the wait early. ``linger_ms = 0`` publishes whatever is waiting
at once, a cycle per arrival when frames trickle.

Errors, read by their ``retryable`` flag:

- retryable (:class:`SinkUnavailable`): the same records are sent again after a
  delay from ``delays(attempt)`` (default: :data:`bridge.backoff.PUBLISH_RETRY`, full
  jitter between a floor and an exponential cap), for as long as it takes;
- not retryable (:class:`SinkRejected`): the records before ``index`` were
  acknowledged, the refused one goes to the dead-letter destination as a
  :class:`~bridge.events.DeadLetter` (error, attempts, original destination, raw
  data) and the rest is sent again. Without an index the records are sent one by
  one to find the refused ones.

:meth:`Publisher.drain` stops within a deadline and leaves every undelivered
critical record in the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence

from bridge.backoff import PUBLISH_RETRY, Backoff
from bridge.codec import EnvelopeContext, encode
from bridge.dead_letters import dead_letter
from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.observer import NULL_OBSERVER, DeliveryObserver
from bridge.errors import SinkError, SinkUnavailable
from bridge.routing import DEFAULT_DESTINATIONS, Route
from bridge.sinks.base import Record, Sink

logger = logging.getLogger(__name__)

PACE_WAIT_S = 0.05
DEFAULT_LINGER_MS = 0.0  # the gateway connection's read pace batches a trickle already (README)
PACE_BATCHES = 2  # the reader yields to the publisher once this many full batches wait


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def dead_letter_record(
    record: Record,
    error: SinkError,
    attempts: int,
    *,
    destination: str,
    ctx: EnvelopeContext,
    received_ns: int,
) -> Record:
    """The dead-letter record for ``record``, refused for good with ``error``."""
    reason, topic = type(error).__name__, record.event_type
    letter = dead_letter(record.data, received_ns, reason, str(error), topic, "publish")
    event = dataclasses.replace(letter, destination=record.destination, attempts=attempts)
    return encode(event, Route(destination, record.key), ctx, received_ns)


class Publisher:
    """Moves batches from a :class:`DeliveryBuffer` into a :class:`Sink`."""

    def __init__(
        self,
        sink: Sink,
        buffer: DeliveryBuffer,
        *,
        max_batch_events: int = 500,
        linger_ms: float = DEFAULT_LINGER_MS,
        delays: Callable[[int], float] | None = None,
        dead_letter_destination: str = DEFAULT_DESTINATIONS["dlq"],
        envelope: EnvelopeContext | None = None,
        observer: DeliveryObserver = NULL_OBSERVER,
        clock_ns: Callable[[], int] = time.time_ns,
        on_acked: Callable[[Sequence[Record], int], None] | None = None,
    ) -> None:
        if max_batch_events < 1:
            raise ValueError("max_batch_events must be at least 1")
        self.sink = sink
        self.buffer = buffer
        self.max_batch_events = max_batch_events
        self._linger_s = linger_ms / 1000
        self._delays = delays or Backoff(PUBLISH_RETRY, random.Random()).delay_for
        self.dead_letter_destination = dead_letter_destination
        self._envelope = envelope if envelope is not None else EnvelopeContext()
        self._observer = observer
        self._clock_ns = clock_ns
        self._on_acked = on_acked
        self._task: asyncio.Task[None] | None = None
        self._cycle_started = float("-inf")  # loop time the last publish cycle began
        self._lingering: asyncio.Future[None] | None = None  # set while waiting for the cadence
        self._idle = asyncio.Event()
        self._taken = asyncio.Event()
        self._sink_down = False
        self.published_events = 0
        self.dead_lettered_events = 0
        self.last_error: str | None = None  # the last failed publish (kept after recovery, for /status)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run :meth:`run` in a task of the current loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="publisher")

    async def run(self) -> None:
        while True:
            if not self.buffer.has_pending():
                self.buffer.sync_spool()
                self._idle.set()
            await self.buffer.wait_pending()
            self._idle.clear()
            await self._linger()
            batch = self.buffer.take(self.max_batch_events)
            self._taken.set()
            if batch.records:
                await self._deliver(batch.records)
            self.buffer.ack(batch)
            if not batch.records:  # e.g. the spool crossing damage, a bounded slice per batch
                await asyncio.sleep(0)

    async def _linger(self) -> None:
        """Wait for the next tick of the cadence (``linger_ms`` after the last cycle began), unless
        the last cycle is that long ago, the batch is full or a critical record waits."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        delay_s = self._cycle_started + self._linger_s - now
        buffer = self.buffer
        if delay_s > 0 and not buffer.critical_events and buffer.memory_events < self.max_batch_events:
            lingering = self._lingering = loop.create_future()
            timer = loop.call_later(delay_s, _release, lingering)
            try:
                await lingering
            finally:
                timer.cancel()
                self._lingering = None
            now = loop.time()
        self._cycle_started = now

    def _end_linger(self) -> None:
        lingering = self._lingering
        if lingering is not None and (
            self.buffer.memory_events >= self.max_batch_events or self.buffer.critical_events
        ):
            _release(lingering)

    async def keep_pace(self, max_wait_s: float = PACE_WAIT_S) -> None:
        """For the reader, after it buffered records: end the publisher's wait for the cadence when
        the batch is full or a critical record waits; yield until the next batch is taken when two
        full batches wait and the sink is acknowledging, so a reader that is faster than the
        publisher (both share one event loop) does not fill the buffer with frames that will only
        be conflated. Waits at most ``max_wait_s``; never while the sink is down (then the buffer
        conflates as designed)."""
        if self._lingering is not None:
            self._end_linger()
        waiting = self.buffer.memory_events
        if self._sink_down or self._task is None or waiting < PACE_BATCHES * self.max_batch_events:
            return
        self._taken.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait_s):
                await self._taken.wait()

    async def flush(self, timeout_s: float) -> bool:
        """Publish what waits now (no waiting for the cadence) and wait until everything put so far
        is acknowledged; False if ``timeout_s`` ran out."""
        if self._lingering is not None:
            _release(self._lingering)
        try:
            await asyncio.wait_for(self._until_idle(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _until_idle(self) -> None:
        while True:
            await self._idle.wait()
            if not self.buffer.has_pending():
                return
            self._idle.clear()

    async def drain(self, timeout_s: float) -> bool:
        """Deliver what is waiting within ``timeout_s``, stop, spool the critical rest.

        Returns True when everything was delivered. Call after the gateway reader stopped.
        """
        if self._task is None:  # never started (e.g. the sink refused at start): nothing was taken
            delivered = self.buffer.memory_events == 0
        else:
            delivered = await self.flush(timeout_s)
        await self.stop()
        saved = self.buffer.close()
        if saved:
            logger.warning("shutdown: %d undelivered critical records left in the spool", saved)
        if self.buffer.spool is not None:
            self.buffer.spool.close()
        return delivered and saved == 0

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ delivering

    async def _deliver(self, records: Sequence[Record]) -> None:
        """Publish ``records`` until each is acknowledged or dead-lettered."""
        pending = list(records)
        attempts = 0
        failures = 0
        while pending:
            attempts += 1
            started = time.perf_counter()
            try:
                await self._publish(pending)
            except SinkError as exc:
                if exc.retryable:
                    failures += 1
                    await self._wait_to_retry(exc, failures)
                    continue
                failures = 0
                pending = await self._handle_rejection(pending, exc, attempts)
                continue
            self._observe_published(pending, time.perf_counter() - started)
            if self._sink_down:
                self._sink_down = False
                logger.info("sink %s recovered after %d failed attempts", self.sink.name, failures)
            return

    async def _publish(self, records: list[Record]) -> None:
        try:
            await self.sink.publish(records)
        except SinkError:
            raise
        except Exception as exc:  # the sink broke its contract: keep the records and retry
            logger.exception("sink %s raised an untranslated error", self.sink.name)
            raise SinkUnavailable(f"untranslated {type(exc).__name__}: {exc}") from exc

    async def _wait_to_retry(self, exc: SinkError, failures: int) -> None:
        self.last_error = str(exc)
        self._observer.publish_failed(type(exc).__name__, True)
        self.buffer.sync_spool()
        if not self._sink_down:
            self._sink_down = True
            logger.warning("sink %s unavailable, retrying with backoff: %s", self.sink.name, exc)
        else:
            logger.debug("sink %s still unavailable (attempt %d): %s", self.sink.name, failures, exc)
        await asyncio.sleep(self._delays(failures))

    async def _handle_rejection(self, pending: list[Record], exc: SinkError, attempts: int) -> list[Record]:
        """Dead-letter the refused record; return what is still to send."""
        self._observer.publish_failed(type(exc).__name__, False)
        index = getattr(exc, "index", None)
        if index is None or not 0 <= index < len(pending):
            if len(pending) == 1:
                self._dead_letter(pending[0], exc, attempts)
                return []
            for record in pending:  # find the refused ones
                await self._deliver([record])
            return []
        if index:
            self._observe_published(pending[:index], None)
        self._dead_letter(pending[index], exc, attempts)
        return pending[index + 1 :]

    def _dead_letter(self, record: Record, exc: SinkError, attempts: int) -> None:
        if record.destination == self.dead_letter_destination:
            logger.error("dead-letter record %s was refused too; dropping it: %s", record.id, exc)
            self._observer.dropped(record.event_class, 1)
            return
        logger.warning(
            "record %s refused by %s, sent to %s: %s",
            record.id,
            record.destination,
            self.dead_letter_destination,
            exc,
        )
        letter = dead_letter_record(
            record,
            exc,
            attempts,
            destination=self.dead_letter_destination,
            ctx=self._envelope,
            received_ns=self._clock_ns(),
        )
        self.buffer.put(letter)
        self.dead_lettered_events += 1
        self._observer.dead_lettered(record.destination, 1)

    @property
    def sink_up(self) -> bool:
        """False from the first failed publish until the next acknowledged one."""
        return not self._sink_down

    def _observe_published(self, records: Sequence[Record], seconds: float | None) -> None:
        self.published_events += len(records)
        if self._on_acked is not None:
            self._on_acked(records, self._clock_ns())
        if seconds is not None:
            self._observer.publish_duration(seconds, len(records))
        counts: dict[str, int] = {}
        for record in records:
            counts[record.destination] = counts.get(record.destination, 0) + 1
        for destination, count in counts.items():
            self._observer.published(destination, count)
