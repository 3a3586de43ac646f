"""Delivery buffers: market data bounded and conflated, critical records never dropped."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

import pytest

from bridge.delivery.buffer import COMMIT_INTERVAL_S, Batch, DeliveryBuffer
from bridge.delivery.market_queue import MarketDataQueue
from bridge.delivery.observer import NullObserver
from bridge.delivery.spool import Spool
from bridge.events import EventClass
from bridge.sinks.base import Record


def quote(conid: int, updated_ms: int | None, seq: int = 0) -> Record:
    return Record(
        destination="ibkr.marketdata.v1",
        key=str(conid).encode(),
        data=b'{"conid":%d,"updated_ms":%d}' % (conid, updated_ms or 0),
        attributes=(("id", f"{conid}:{updated_ms}:{seq}"), ("sequence", seq)),
        event_class=EventClass.MARKET_DATA,
        event_type="com.ibkr.marketdata.quote.v1",
        updated_ms=updated_ms,
    )


def order(n: int, key: int = 1) -> Record:
    return Record(
        destination="ibkr.orders.v1",
        key=str(key).encode(),
        data=b'{"n":%d}' % n,
        attributes=(("id", f"order-{n}"), ("sequence", n)),
        event_class=EventClass.CRITICAL,
        event_type="com.ibkr.orders.order.v1",
        updated_ms=n,
    )


class CountingObserver(NullObserver):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.backpressure_changes: list[bool] = []

    def conflated(self, event_class: EventClass, count: int) -> None:
        self.counts[f"conflated:{event_class.value}"] += count

    def dropped(self, event_class: EventClass, count: int) -> None:
        self.counts[f"dropped:{event_class.value}"] += count

    def spooled(self, count: int) -> None:
        self.counts["spooled"] += count

    def replayed(self, count: int) -> None:
        self.counts["replayed"] += count

    def backpressure(self, on: bool) -> None:
        self.backpressure_changes.append(on)


def drain(buffer: DeliveryBuffer, batch_events: int = 3) -> list[Record]:
    """Take and acknowledge batches until nothing is left, as a healthy sink would."""
    out: list[Record] = []
    while buffer.has_pending():
        batch = buffer.take(batch_events)
        out.extend(batch.records)
        buffer.ack(batch)
    return out


def ms_of(records: list[Record], conid: int) -> list[int | None]:
    return [r.updated_ms for r in records if r.key == str(conid).encode()]


# --------------------------------------------------------------------------- market data


def test_market_data_below_the_bound_is_delivered_in_full_and_in_order() -> None:
    queue = MarketDataQueue(max_events=10)
    for ms in range(5):
        queue.put(quote(1, ms))
    assert [r.updated_ms for r in queue.take(10)] == [0, 1, 2, 3, 4]
    assert queue.conflated_events == 0


def test_a_backlog_conflates_each_key_to_its_newest_state_and_counts_it() -> None:
    observer = CountingObserver()
    queue = MarketDataQueue(max_events=4, observer=observer)
    for ms in range(1, 101):
        for conid in (1, 2):
            queue.put(quote(conid, ms))
    assert len(queue) <= 4
    taken = queue.take(100)
    assert ms_of(taken, 1)[-1] == 100
    assert ms_of(taken, 2)[-1] == 100
    assert queue.conflated_events == 200 - len(taken)
    assert observer.counts["conflated:market_data"] == queue.conflated_events


def test_an_older_value_never_replaces_a_fresher_one_waiting_for_the_same_key() -> None:
    queue = MarketDataQueue(max_events=1)
    queue.put(quote(1, 500))
    queue.put(quote(1, 400))  # late, stale copy
    assert [r.updated_ms for r in queue.take(10)] == [500]
    queue.put(quote(1, 500, seq=1))
    queue.put(quote(1, 500, seq=2))  # same time: the later arrival wins
    assert [r.id for r in queue.take(10)] == ["1:500:2"]
    queue.put(quote(1, 500))
    queue.put(quote(1, None))  # no time: arrival order decides
    assert [r.updated_ms for r in queue.take(10)] == [None]
    assert queue.conflated_events == 3


def test_conflation_keeps_each_keys_values_in_increasing_order() -> None:
    queue = MarketDataQueue(max_events=6)
    for ms in range(1, 40):
        queue.put(quote(ms % 3, ms))
        if ms % 7 == 0:
            queue.take(2)
    taken = queue.take(100)
    for conid in range(3):
        values = ms_of(taken, conid)
        assert values == sorted(values)  # type: ignore[type-var]
        assert values[-1] == max(ms for ms in range(1, 40) if ms % 3 == conid)


def test_compaction_keeps_the_freshest_value_even_if_it_arrived_first() -> None:
    queue = MarketDataQueue(max_events=3)
    queue.put(quote(1, 900))
    queue.put(quote(1, 100))  # arrived later but older
    queue.put(quote(2, 1))
    queue.put(quote(3, 1))  # full with a duplicate key: compaction
    assert ms_of(queue.take(10), 1) == [900]


def test_when_every_waiting_record_has_its_own_key_the_oldest_is_dropped_and_counted() -> None:
    observer = CountingObserver()
    queue = MarketDataQueue(max_events=3, observer=observer)
    for conid in range(5):
        queue.put(quote(conid, 1))
    assert [int(r.key) for r in queue.take(10)] == [2, 3, 4]
    assert queue.dropped_events == 2
    assert observer.counts["dropped:market_data"] == 2


def test_market_data_memory_stays_bounded_while_nothing_is_taken() -> None:
    buffer = DeliveryBuffer(max_market_events=50)
    for ms in range(10_000):
        buffer.put(quote(ms % 20, ms))
    assert len(buffer.market) <= 50
    newest = {conid: max(ms for ms in range(10_000) if ms % 20 == conid) for conid in range(20)}
    assert {int(r.key): r.updated_ms for r in drain(buffer)} == newest


# --------------------------------------------------------------------------- critical records


def test_every_critical_record_is_written_through_and_those_beyond_the_cache_are_read_back_in_order(
    tmp_path: Path,
) -> None:
    observer = CountingObserver()
    buffer = DeliveryBuffer(
        max_critical_events=4, spool=Spool(tmp_path, max_bytes=1 << 20), observer=observer
    )
    for n in range(30):
        buffer.put(order(n))
    assert buffer.critical_events <= 4
    assert observer.counts["spooled"] == 30  # each one on disk before the publisher could take it
    assert [r.id for r in drain(buffer)] == [f"order-{n}" for n in range(30)]
    assert observer.counts["replayed"] == 30 - 4  # the first four were sent from memory


def test_records_put_while_the_spool_replays_wait_behind_it(tmp_path: Path) -> None:
    buffer = DeliveryBuffer(max_critical_events=2, spool=Spool(tmp_path, max_bytes=1 << 20))
    out: list[Record] = []
    for n in range(40):
        buffer.put(order(n))
        if n % 5 == 0:
            batch = buffer.take(3)
            out.extend(batch.records)
            buffer.ack(batch)
    out.extend(drain(buffer))
    assert [r.id for r in out] == [f"order-{n}" for n in range(40)]


def test_a_batch_in_flight_when_memory_overflows_is_spooled_ahead_of_newer_records(tmp_path: Path) -> None:
    buffer = DeliveryBuffer(max_critical_events=3, spool=Spool(tmp_path / "s", max_bytes=1 << 20))
    for n in range(3):
        buffer.put(order(n))
    buffer.take(2)  # the sink never acknowledges it: crash
    for n in range(3, 12):
        buffer.put(order(n))
    assert buffer.close() > 0
    restarted = DeliveryBuffer(max_critical_events=3, spool=Spool(tmp_path / "s", max_bytes=1 << 20))
    restarted.put(order(12))
    assert [r.id for r in drain(restarted)] == [f"order-{n}" for n in range(13)]


def test_an_acknowledged_in_flight_batch_is_not_delivered_twice(tmp_path: Path) -> None:
    buffer = DeliveryBuffer(max_critical_events=3, spool=Spool(tmp_path, max_bytes=1 << 20))
    for n in range(3):
        buffer.put(order(n))
    batch = buffer.take(2)
    for n in range(3, 12):
        buffer.put(order(n))
    buffer.ack(batch)
    rest = drain(buffer)
    assert [r.id for r in batch.records + tuple(rest)] == [f"order-{n}" for n in range(12)]


def test_closing_persists_memory_and_the_unacknowledged_batch_for_the_next_start(tmp_path: Path) -> None:
    buffer = DeliveryBuffer(
        max_market_events=10, max_critical_events=100, spool=Spool(tmp_path, max_bytes=1 << 20)
    )
    for n in range(5):
        buffer.put(order(n))
        buffer.put(quote(1, n))
    buffer.take(3)
    assert buffer.close() == 5
    restarted = DeliveryBuffer(spool=Spool(tmp_path, max_bytes=1 << 20))
    assert restarted.has_pending()
    restarted.put(order(5))
    assert [r.id for r in drain(restarted)] == [f"order-{n}" for n in range(6)]


def test_without_a_spool_a_full_memory_applies_backpressure_and_loses_nothing() -> None:
    observer = CountingObserver()
    buffer = DeliveryBuffer(max_critical_events=5, observer=observer)
    for n in range(8):
        buffer.put(order(n))
    backpressure_when_full = buffer.backpressure
    assert [r.id for r in drain(buffer)] == [f"order-{n}" for n in range(8)]
    assert backpressure_when_full
    assert not buffer.backpressure
    assert observer.backpressure_changes == [True, False]


async def test_the_gateway_reader_waits_while_the_spool_is_over_its_quota(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=600, segment_bytes=200)
    buffer = DeliveryBuffer(max_critical_events=4, spool=spool)
    n = 0
    while not buffer.backpressure:
        buffer.put(order(n))
        n += 1
        assert n < 1_000
    reader = asyncio.create_task(buffer.wait_writable())
    await asyncio.sleep(0)
    assert not reader.done()
    assert not spool.has_room()
    for extra in range(n, n + 5):  # frames already read still arrive: kept, not lost
        buffer.put(order(extra))
    out = drain(buffer, batch_events=2)
    await asyncio.wait_for(reader, timeout=5)
    assert [r.id for r in out] == [f"order-{i}" for i in range(n + 5)]


def test_wait_writable_returns_at_once_without_backpressure() -> None:
    buffer = DeliveryBuffer()
    asyncio.run(asyncio.wait_for(buffer.wait_writable(), timeout=5))


def test_a_batch_carries_critical_records_before_market_data() -> None:
    buffer = DeliveryBuffer()
    buffer.put(quote(1, 1))
    buffer.put(order(0))
    batch = buffer.take(10)
    assert [r.event_class for r in batch.records] == [EventClass.CRITICAL, EventClass.MARKET_DATA]
    assert len(batch) == 2


def test_taking_a_second_batch_before_acknowledging_the_first_is_an_error() -> None:
    buffer = DeliveryBuffer()
    buffer.put(order(0))
    buffer.take(1)
    with pytest.raises(RuntimeError):
        buffer.take(1)
    with pytest.raises(RuntimeError):
        buffer.ack(Batch((), ()))


def test_critical_records_put_after_close_go_straight_to_the_spool(tmp_path: Path) -> None:
    buffer = DeliveryBuffer(spool=Spool(tmp_path, max_bytes=1 << 20))
    buffer.close()
    buffer.put(order(7))
    assert [r.id for r in drain(DeliveryBuffer(spool=Spool(tmp_path, max_bytes=1 << 20)))] == ["order-7"]


def test_put_many_conflates_exactly_like_put_one_by_one_across_the_bound() -> None:
    records = [quote(conid, ms) for ms in range(1, 40) for conid in (1, 2, 3, 1 + ms % 5)]
    one_by_one, many = MarketDataQueue(7), MarketDataQueue(7)
    for record in records:
        one_by_one.put(record)
    many.put_many(records[:5])
    many.put_many(records[5:])
    assert many.take(100) == one_by_one.take(100)
    assert many.conflated_events == one_by_one.conflated_events > 0
    assert many.dropped_events == one_by_one.dropped_events


def test_taking_everything_forgets_the_keys_so_later_records_get_new_slots() -> None:
    queue = MarketDataQueue(2)
    queue.put_many([quote(1, 1), quote(2, 1)])
    assert [r.updated_ms for r in queue.take(10)] == [1, 1]
    queue.put_many([quote(1, 2), quote(1, 3), quote(2, 2)])  # full again: conflates, nothing stale
    assert [(r.key, r.updated_ms) for r in queue.take(10)] == [(b"1", 3), (b"2", 2)]
    assert len(queue) == 0 and queue.take(10) == []


def test_a_partial_take_leaves_the_rest_conflatable() -> None:
    queue = MarketDataQueue(3)
    queue.put_many([quote(1, 1), quote(2, 1), quote(3, 1)])
    assert [r.key for r in queue.take(1)] == [b"1"]
    queue.put_many([quote(2, 2), quote(4, 1), quote(4, 2)])  # compacts: each key at its last position
    assert [(r.key, r.updated_ms) for r in queue.take(10)] == [(b"3", 1), (b"2", 2), (b"4", 2)]


def test_conflation_after_draining_to_half_full_and_filling_again_still_merges_every_waiting_key() -> None:
    queue = MarketDataQueue(4)
    queue.put_many(quote(conid, 1) for conid in (1, 2, 3, 4))  # any iterable
    queue.put(quote(1, 2))  # full: conflates into the waiting key 1
    assert [(r.key, r.updated_ms) for r in queue.take(2)] == [(b"1", 2), (b"2", 1)]  # half full now
    queue.put_many([quote(3, 2), quote(5, 1), quote(3, 3), quote(4, 0)])  # full again from the 6th record
    queue.put(quote(6, 1))  # a new key: compacts key 3 to its last slot, which holds its newest value
    taken = [(r.key, r.updated_ms) for r in queue.take(10)]
    assert taken == [(b"4", 1), (b"3", 3), (b"5", 1), (b"6", 1)]  # 4 never went back in time
    assert queue.conflated_events == 4
    assert queue.dropped_events == 0


def test_a_partial_take_of_an_unconflated_queue_keeps_arrival_order_and_duplicate_keys() -> None:
    queue = MarketDataQueue(100)
    queue.put_many([quote(1, 1), quote(1, 2), quote(2, 1)])
    assert [(r.key, r.updated_ms) for r in queue.take(2)] == [(b"1", 1), (b"1", 2)]
    queue.put(quote(1, 3))
    assert [(r.key, r.updated_ms) for r in queue.take(5)] == [(b"2", 1), (b"1", 3)]
    assert queue.conflated_events == 0


def test_a_backlogged_market_queue_keeps_about_a_kilobyte_per_quote_not_an_orjson_buffer() -> None:
    import tracemalloc

    import orjson

    from bridge.delivery.market_queue import MarketDataQueue
    from bridge.sinks.base import Record as _Record

    queue = MarketDataQueue(20_001)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, 20_000, 100):
        batch = [_Record("ibkr.marketdata.v1", str(n % 500).encode(), orjson.dumps({"conid": n, "v": "x" * 600}),
                         (), EventClass.MARKET_DATA, "com.ibkr.marketdata.quote.v1", n)
                 for n in range(start, start + 100)]  # fmt: skip
        queue.put_many(batch)
    per_record = (tracemalloc.get_traced_memory()[0] - before) / 20_000
    tracemalloc.stop()
    assert len(queue) == 20_000
    assert per_record < 1_500, f"{per_record:.0f} bytes per buffered record"  # was ~8.6 KB: orjson's buffer


# --------------------------------------------------------------------------- write-through


def spool_ids(directory: Path, scratch: Path) -> list[str]:
    """The ids a restart would replay from ``directory`` as it is now (read from a copy)."""
    copy = scratch / f"copy-{len(list(scratch.glob('copy-*')))}"
    shutil.copytree(directory, copy)
    spool = Spool(copy, max_bytes=1 << 20)
    ids: list[str] = []
    while spool.has_unread():
        records, _ = spool.read(100)
        ids += [r.id for r in records]
    spool.close()
    return ids


def test_a_critical_record_is_on_disk_before_the_publisher_can_take_it(tmp_path: Path) -> None:
    buffer = DeliveryBuffer(max_critical_events=100, spool=Spool(tmp_path / "s", max_bytes=1 << 20))
    buffer.put(order(0))
    buffer.put_many([quote(1, 1), order(1), order(2)])
    assert spool_ids(tmp_path / "s", tmp_path) == ["order-0", "order-1", "order-2"]  # a SIGKILL now loses none
    assert [r.id for r in buffer.take(10).critical] == ["order-0", "order-1", "order-2"]


def test_acknowledged_records_are_committed_and_not_replayed_after_a_restart(tmp_path: Path) -> None:
    now = [0.0]
    spool = Spool(tmp_path / "s", max_bytes=1 << 20)
    buffer = DeliveryBuffer(max_critical_events=100, spool=spool, clock=lambda: now[0])
    buffer.put_many([order(n) for n in range(10)])  # one append
    for _ in range(2):  # parts of that append: its end is not committed yet
        buffer.ack(buffer.take(4))
    assert spool_ids(tmp_path / "s", tmp_path) == [f"order-{n}" for n in range(10)]
    buffer.ack(buffer.take(4))  # the rest: committed at once (no commit for COMMIT_INTERVAL_S before)
    assert spool_ids(tmp_path / "s", tmp_path) == []
    buffer.put(order(10))
    buffer.put(order(11))
    buffer.ack(buffer.take(1))  # within COMMIT_INTERVAL_S of the last commit: deferred
    assert spool_ids(tmp_path / "s", tmp_path) == ["order-10", "order-11"]  # a crash: a duplicate
    now[0] += COMMIT_INTERVAL_S
    buffer.ack(buffer.take(1))
    assert spool_ids(tmp_path / "s", tmp_path) == []


def test_records_beyond_the_memory_cache_are_read_back_from_the_spool_in_order(tmp_path: Path) -> None:
    observer = CountingObserver()
    buffer = DeliveryBuffer(max_critical_events=3, spool=Spool(tmp_path, max_bytes=1 << 20), observer=observer)
    out: list[Record] = []
    for n in range(20):
        buffer.put(order(n, key=n % 3))
        if n % 7 == 6:
            batch = buffer.take(2)
            out.extend(batch.records)
            buffer.ack(batch)
    out.extend(drain(buffer, batch_events=4))
    assert [r.id for r in out] == [f"order-{n}" for n in range(20)]
    assert 0 < observer.counts["replayed"] < 20 and not buffer.backpressure
