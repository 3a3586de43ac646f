"""The publisher against the in-memory sink with injected failures."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest

from bridge.backoff import PUBLISH_RETRY, Backoff
from bridge.codec import EnvelopeContext, encode
from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.observer import NullObserver
from bridge.delivery.spool import Spool
from bridge.errors import SinkRejected
from bridge.events import DeadLetter, EventClass, Order, Quote
from bridge.publisher import Publisher
from bridge.routing import Router
from bridge.sinks.base import Record
from bridge.sinks.memory import MemorySink

ROUTER = Router()
ORDERS = "ibkr.orders.v1"
MARKET = "ibkr.marketdata.v1"
DLQ = "ibkr.dlq.v1"


def encoded(event: Order | Quote, ctx: EnvelopeContext) -> Record:
    route = ROUTER.route(event)
    assert route is not None
    return encode(event, route, ctx, 1_700_000_000_000_000_000)


def order(ctx: EnvelopeContext, order_id: int, n: int) -> Record:
    event = Order(
        account="U1",
        order_id=order_id,
        changed=("filled_quantity",),
        reconciled=False,
        status="Submitted",
        filled_quantity=float(n),
    )
    return encoded(event, ctx)


def quote(ctx: EnvelopeContext, conid: int, updated_ms: int) -> Record:
    event = Quote(
        conid=conid,
        conid_ex=None,
        updated_ms=updated_ms,
        server_id=None,
        snapshot=False,
        changed=("31",),
        values={"31": str(updated_ms)},
    )
    return encoded(event, ctx)


def filled(record: Record) -> float:
    return float(orjson.loads(record.data)["filled_quantity"])


def no_delay(attempt: int) -> float:
    return 0.0


async def until(condition: Callable[[], bool], steps: int = 100_000) -> None:
    """Let the loop run until ``condition`` holds (a step count, not a clock)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def failed_more_than(sink: MemorySink, calls: int) -> Callable[[], bool]:
    return lambda: sink.failed_calls > calls


def make(
    tmp_path: Path | None = None, sink: MemorySink | None = None, **kwargs: object
) -> tuple[MemorySink, DeliveryBuffer, Publisher]:
    sink = sink or MemorySink()
    spool = Spool(tmp_path, max_bytes=1 << 22, segment_bytes=4096) if tmp_path is not None else None
    buffer = DeliveryBuffer(max_market_events=20, max_critical_events=16, spool=spool)
    options: dict[str, object] = {"linger_ms": 0, "delays": no_delay, **kwargs}
    publisher = Publisher(sink, buffer, **options)  # type: ignore[arg-type]
    return sink, buffer, publisher


@pytest.fixture
def ctx() -> EnvelopeContext:
    return EnvelopeContext()


async def test_every_record_reaches_the_sink_in_order_in_batches_within_the_limit(
    ctx: EnvelopeContext,
) -> None:
    sink, buffer, publisher = make(max_batch_events=7)
    publisher.start()
    expected = [order(ctx, n % 3, n) for n in range(50)]
    for record in expected:
        buffer.put(record)
    assert await publisher.flush(timeout_s=10)
    assert sink.ids(ORDERS) == [r.id for r in expected]
    assert max(sink.batch_sizes) <= 7
    await publisher.stop()


async def test_records_put_together_are_sent_as_one_batch(ctx: EnvelopeContext) -> None:
    sink, buffer, publisher = make(max_batch_events=100)
    publisher.start()
    buffer.put_many([order(ctx, 1, n) for n in range(10)])
    assert await publisher.flush(timeout_s=10)
    assert sink.batch_sizes == [10]
    await publisher.stop()


async def test_a_lone_record_is_sent_at_once_instead_of_waiting_out_the_linger(ctx: EnvelopeContext) -> None:
    sink, buffer, publisher = make(max_batch_events=100, linger_ms=600_000)
    publisher.start()
    buffer.put(order(ctx, 1, 1))
    await until(lambda: sink.batch_sizes == [1])
    buffer.put(order(ctx, 1, 2))
    await until(lambda: sink.batch_sizes == [1, 1])
    assert await publisher.flush(timeout_s=10)
    await publisher.stop()


async def trickle(publisher: Publisher, buffer: DeliveryBuffer, record: Record, passes: int = 20) -> None:
    """Put ``record`` as the reader does, then let the loop run ``passes`` times (a trickling feed)."""
    buffer.put(record)
    await publisher.keep_pace()
    for _ in range(passes):
        await asyncio.sleep(0)


async def test_quotes_that_trickle_in_wait_for_the_cadence_and_go_out_together(ctx: EnvelopeContext) -> None:
    sink, buffer, publisher = make(max_batch_events=10, linger_ms=600_000)
    publisher.start()
    await trickle(publisher, buffer, quote(ctx, 0, 0))
    assert sink.batch_sizes == [1]  # the first after a quiet spell goes at once
    for n in range(1, 10):
        await trickle(publisher, buffer, quote(ctx, n, n))
    assert sink.batch_sizes == [1]  # the next ones wait for the cadence
    await trickle(publisher, buffer, quote(ctx, 10, 10))  # a full batch does not wait
    await until(lambda: sink.batch_sizes == [1, 10])
    assert [r.updated_ms for r in sink.records[MARKET]] == list(range(11))
    await publisher.stop()


async def test_a_critical_record_ends_the_wait_for_the_cadence(ctx: EnvelopeContext) -> None:
    sink, buffer, publisher = make(max_batch_events=100, linger_ms=600_000)
    publisher.start()
    await trickle(publisher, buffer, quote(ctx, 0, 0))
    for n in range(1, 4):
        await trickle(publisher, buffer, quote(ctx, n, n))
    assert sink.batch_sizes == [1]
    await trickle(publisher, buffer, order(ctx, 1, 1))
    await until(lambda: sink.batch_sizes == [1, 4])
    await publisher.stop()


async def test_flush_publishes_without_waiting_for_the_cadence(ctx: EnvelopeContext) -> None:
    sink, buffer, publisher = make(max_batch_events=100, linger_ms=600_000)
    publisher.start()
    await trickle(publisher, buffer, quote(ctx, 0, 0))
    await trickle(publisher, buffer, quote(ctx, 1, 1))
    assert sink.batch_sizes == [1]
    assert await publisher.flush(timeout_s=10)
    assert sink.batch_sizes == [1, 1]
    await publisher.stop()


async def test_an_outage_loses_no_critical_record_and_keeps_per_key_order(
    tmp_path: Path, ctx: EnvelopeContext
) -> None:
    sink, buffer, publisher = make(tmp_path, max_batch_events=8)
    publisher.start()
    sink.down = True
    sent: list[Record] = []
    for n in range(300):
        sent.append(order(ctx, n % 7, n))
        buffer.put(sent[-1])
        buffer.put(quote(ctx, n % 5, n))
        if n % 50 == 0:
            await until(failed_more_than(sink, n // 10))
    assert buffer.spooled_events > 0  # memory overflowed to disk during the outage
    assert sink.count() == 0
    sink.down = False
    assert await publisher.flush(timeout_s=30)
    assert sink.ids(ORDERS) == [r.id for r in sent]
    for key, records in sink.by_key(ORDERS).items():
        assert [filled(r) for r in records] == sorted(filled(r) for r in records), key
    await publisher.stop()


async def test_after_an_outage_market_data_is_conflated_and_ends_at_the_newest_value(
    ctx: EnvelopeContext,
) -> None:
    sink, buffer, publisher = make()
    publisher.start()
    sink.down = True
    for ms in range(1, 1001):
        buffer.put(quote(ctx, ms % 4, ms))
    await until(lambda: sink.failed_calls >= 3)
    sink.down = False
    assert await publisher.flush(timeout_s=10)
    assert buffer.market.conflated_events > 0
    assert len(sink.records[MARKET]) + buffer.market.conflated_events == 1000
    for conid in range(4):
        values = [r.updated_ms for r in sink.by_key(MARKET)[str(conid).encode()]]
        assert values == sorted(values)  # type: ignore[type-var]
        assert values[-1] == max(ms for ms in range(1, 1001) if ms % 4 == conid)
    await publisher.stop()


async def test_retryable_errors_are_retried_with_growing_attempt_numbers(ctx: EnvelopeContext) -> None:
    attempts: list[int] = []

    def record_delay(attempt: int) -> float:
        attempts.append(attempt)
        return 0.0

    sink, buffer, publisher = make(delays=record_delay)
    sink.fail_next(3)
    publisher.start()
    buffer.put(order(ctx, 1, 1))
    assert await publisher.flush(timeout_s=10)
    assert attempts == [1, 2, 3]
    assert sink.ids(ORDERS) == [order(ctx, 1, 1).id]
    await publisher.stop()


async def test_a_refused_record_goes_to_the_dead_letter_destination_with_its_context(
    ctx: EnvelopeContext,
) -> None:
    sink, buffer, publisher = make()
    records = [order(ctx, 1, n) for n in range(5)]
    sink.reject(records[2].id, "message too large")
    sink.fail_next(1)
    publisher.start()
    buffer.put_many(records)
    assert await publisher.flush(timeout_s=10)

    assert sink.ids(ORDERS) == [r.id for r in records if r is not records[2]]
    (letter,) = sink.records[DLQ]
    assert letter.event_type == DeadLetter.TYPE
    assert letter.key == records[2].key
    body = orjson.loads(letter.data)
    assert body["destination"] == ORDERS
    assert body["stage"] == "publish"
    assert "message too large" in body["error"]
    assert body["attempts"] == 2
    assert body["raw_encoding"] == "utf-8"
    assert orjson.loads(body["raw"]) == orjson.loads(records[2].data)
    assert publisher.dead_lettered_events == 1
    await publisher.stop()


class IndexlessRejectingSink(MemorySink):
    """Refuses any batch holding a bad id without saying which record it was."""

    def __init__(self, bad_ids: set[str]) -> None:
        super().__init__()
        self.bad_ids = bad_ids

    async def publish(self, batch: Sequence[Record]) -> None:
        if any(r.id in self.bad_ids for r in batch):
            raise SinkRejected("not authorized")
        await super().publish(batch)


async def test_a_refusal_without_an_index_is_narrowed_down_record_by_record(ctx: EnvelopeContext) -> None:
    records = [order(ctx, 1, n) for n in range(6)]
    sink, buffer, publisher = make(sink=IndexlessRejectingSink({records[1].id, records[4].id}))
    publisher.start()
    buffer.put_many(records)
    assert await publisher.flush(timeout_s=10)
    assert sink.ids(ORDERS) == [records[n].id for n in (0, 2, 3, 5)]
    assert sorted(orjson.loads(r.data)["raw"] for r in sink.records[DLQ]) == sorted(
        records[n].data.decode() for n in (1, 4)
    )
    await publisher.stop()


async def test_a_refused_dead_letter_is_dropped_instead_of_looping(ctx: EnvelopeContext) -> None:
    class RefuseEverything(MemorySink):
        async def publish(self, batch: Sequence[Record]) -> None:
            self.publish_calls += 1
            raise SinkRejected("topic authorization failed", index=0)

    dropped: Counter[EventClass] = Counter()

    class Observer(NullObserver):
        def dropped(self, event_class: EventClass, count: int) -> None:
            dropped[event_class] += count

    sink, buffer, publisher = make(sink=RefuseEverything(), observer=Observer())
    publisher.start()
    buffer.put(order(ctx, 1, 1))
    assert await publisher.flush(timeout_s=10)
    assert sink.publish_calls == 2  # the order, then its dead letter
    assert dropped[EventClass.CRITICAL] == 1
    await publisher.stop()


async def test_a_lost_acknowledgement_may_duplicate_but_never_reorders(ctx: EnvelopeContext) -> None:
    sink, buffer, publisher = make(max_batch_events=10)
    records = [order(ctx, n % 2, n) for n in range(10)]
    sink.fail_after(4)
    publisher.start()
    buffer.put_many(records)
    assert await publisher.flush(timeout_s=10)
    ids = sink.ids(ORDERS)
    assert ids == [r.id for r in records[:4]] + [r.id for r in records]
    assert list(dict.fromkeys(ids)) == [r.id for r in records]
    await publisher.stop()


async def test_drain_with_the_sink_down_leaves_critical_records_in_the_spool_for_the_next_start(
    tmp_path: Path, ctx: EnvelopeContext
) -> None:
    sink, buffer, publisher = make(tmp_path, max_batch_events=5)
    sink.down = True
    publisher.start()
    before = [order(ctx, n % 3, n) for n in range(40)]
    buffer.put_many(before)
    buffer.put(quote(ctx, 1, 1))
    await until(lambda: sink.failed_calls >= 2)
    assert not await publisher.drain(timeout_s=0.05)
    assert sink.count() == 0

    sink2, buffer2, publisher2 = make(tmp_path, max_batch_events=5)
    after = [order(ctx, n % 3, n) for n in range(40, 50)]
    buffer2.put_many(after)
    publisher2.start()
    assert await publisher2.drain(timeout_s=10)
    assert sink2.ids(ORDERS) == [r.id for r in before + after]


async def test_drain_reports_success_when_everything_was_delivered(ctx: EnvelopeContext) -> None:
    sink, buffer, publisher = make()
    publisher.start()
    buffer.put_many([order(ctx, 1, n) for n in range(20)])
    assert await publisher.drain(timeout_s=10)
    assert sink.count() == 20


async def test_drain_of_a_publisher_that_never_started_still_spools_what_is_held(
    tmp_path: Path, ctx: EnvelopeContext
) -> None:
    _, buffer, publisher = make(tmp_path)
    buffer.put(order(ctx, 1, 1))
    assert not await publisher.drain(timeout_s=1)
    sink2, _, publisher2 = make(tmp_path)
    publisher2.start()
    assert await publisher2.flush(timeout_s=10)
    assert sink2.ids(ORDERS) == [order(ctx, 1, 1).id]
    await publisher2.stop()


async def test_publishing_is_reported_per_destination_and_failures_are_counted(ctx: EnvelopeContext) -> None:
    published: Counter[str] = Counter()
    failures: list[tuple[str, bool]] = []

    class Observer(NullObserver):
        def published(self, destination: str, count: int) -> None:
            published[destination] += count

        def publish_failed(self, error: str, retryable: bool) -> None:
            failures.append((error, retryable))

    sink, buffer, publisher = make(observer=Observer())
    sink.fail_next(2)
    publisher.start()
    buffer.put_many([order(ctx, 1, 1), quote(ctx, 5, 1), quote(ctx, 6, 1)])
    assert await publisher.flush(timeout_s=10)
    assert published == {ORDERS: 1, MARKET: 2}
    assert failures == [("SinkUnavailable", True), ("SinkUnavailable", True)]
    await publisher.stop()


def test_publish_retry_delays_stay_between_the_floor_and_the_cap() -> None:
    retry = Backoff(PUBLISH_RETRY, random.Random(7))
    delays = [retry.delay_for(attempt) for attempt in range(1, 60) for _ in range(20)]
    assert all(PUBLISH_RETRY.floor_s <= d <= PUBLISH_RETRY.cap_s for d in delays)
    assert max(delays) > 1.0  # the exponential ceiling does grow towards the cap
    assert retry.delay_for(1) <= 0.1


async def test_a_sink_error_that_was_not_translated_is_retried_without_loss(ctx: EnvelopeContext) -> None:
    class BrokenOnce(MemorySink):
        async def publish(self, batch: Sequence[Record]) -> None:
            if self.publish_calls == 0:
                self.publish_calls += 1
                raise ConnectionResetError("socket closed")
            await super().publish(batch)

    sink, buffer, publisher = make(sink=BrokenOnce())
    publisher.start()
    buffer.put_many([order(ctx, 1, n) for n in range(3)])
    assert await publisher.flush(timeout_s=10)
    assert sink.ids(ORDERS) == [order(ctx, 1, n).id for n in range(3)]
    await publisher.stop()


async def test_backpressure_during_an_outage_is_released_once_the_sink_recovers(
    tmp_path: Path, ctx: EnvelopeContext
) -> None:
    sink = MemorySink()
    spool = Spool(tmp_path, max_bytes=4_000, segment_bytes=1_000)
    buffer = DeliveryBuffer(max_critical_events=8, spool=spool)
    publisher = Publisher(sink, buffer, max_batch_events=4, linger_ms=0, delays=no_delay)
    sink.down = True
    publisher.start()
    sent: list[Record] = []
    while not buffer.backpressure:
        sent.append(order(ctx, len(sent) % 4, len(sent)))
        buffer.put(sent[-1])
        assert len(sent) < 10_000
    reader = asyncio.create_task(buffer.wait_writable())
    await until(lambda: sink.failed_calls >= 5)
    assert not reader.done()
    sink.down = False
    await asyncio.wait_for(reader, timeout=30)
    assert await publisher.flush(timeout_s=30)
    assert sink.ids(ORDERS) == [r.id for r in sent]
    await publisher.stop()
