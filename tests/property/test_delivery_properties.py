"""Any interleaving of enqueues, sink outages, lost acknowledgements and restarts.

Whatever happens, once the sink is back: no critical record is lost, each key's
critical records arrive in the order they were put, and each key's market data
ends at its newest value without a stale one after a fresh one.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.spool import Spool
from bridge.events import EventClass
from bridge.publisher import Publisher
from bridge.sinks.base import Record
from bridge.sinks.memory import MemorySink

KEYS = 3

Op = tuple[str, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.integers(0, KEYS - 1)),
        st.tuples(st.just("quote"), st.integers(0, KEYS - 1)),
        st.tuples(st.sampled_from(["orders", "quotes"]), st.integers(1, 25)),  # a burst, keys cycling
        st.tuples(st.sampled_from(["down", "up", "lost_ack", "restart"]), st.just(0)),
        st.tuples(st.just("run"), st.integers(1, 12)),
    ),
    max_size=80,
)


def order(key: int, n: int) -> Record:
    return Record(
        destination="ibkr.orders.v1",
        key=b"%d" % key,
        data=b'{"order_id":%d,"n":%d,"pad":"%s"}' % (key, n, b"p" * 60),
        attributes=(("id", f"order-{n}"), ("sequence", n)),
        event_class=EventClass.CRITICAL,
        event_type="com.ibkr.orders.order.v1",
        updated_ms=n,
    )


def quote(key: int, updated_ms: int) -> Record:
    return Record(
        destination="ibkr.marketdata.v1",
        key=b"%d" % key,
        data=b'{"conid":%d,"updated_ms":%d}' % (key, updated_ms),
        attributes=(("id", f"{key}:{updated_ms}"),),
        event_class=EventClass.MARKET_DATA,
        event_type="com.ibkr.marketdata.quote.v1",
        updated_ms=updated_ms,
    )


def no_delay(attempt: int) -> float:
    return 0.0


@dataclass
class Scenario:
    directory: Path
    sink: MemorySink = field(default_factory=MemorySink)
    sent: dict[int, list[str]] = field(default_factory=dict)
    newest_quote: dict[int, int] = field(default_factory=dict)
    counter: int = 0

    def start(self) -> tuple[DeliveryBuffer, Publisher]:
        spool = Spool(self.directory, max_bytes=1_500, segment_bytes=300, fsync="never")
        buffer = DeliveryBuffer(max_market_events=3, max_critical_events=4, spool=spool)
        publisher = Publisher(self.sink, buffer, max_batch_events=3, linger_ms=0, delays=no_delay)
        publisher.start()
        return buffer, publisher

    def put_one(self, buffer: DeliveryBuffer, name: str, key: int) -> None:
        self.counter += 1
        if name == "order":
            buffer.put(order(key, self.counter))
            self.sent.setdefault(key, []).append(f"order-{self.counter}")
        else:
            buffer.put(quote(key, self.counter))
            self.newest_quote[key] = self.counter

    async def play(self, steps: list[Op]) -> None:
        buffer, publisher = self.start()
        for name, arg in steps:
            if name in ("order", "quote"):
                self.put_one(buffer, name, arg)
            elif name in ("orders", "quotes"):
                for n in range(arg):
                    self.put_one(buffer, name[:-1], n % KEYS)
            elif name in ("down", "up"):
                self.sink.down = name == "down"
            elif name == "lost_ack":
                self.sink.fail_after(1)
            elif name == "run":
                for _ in range(arg):
                    await asyncio.sleep(0)
            elif name == "restart":  # shutdown without time to deliver, then start again
                await publisher.drain(timeout_s=0)
                self.newest_quote.clear()  # market data waiting at shutdown is let go
                buffer, publisher = self.start()
        self.sink.down = False
        assert await publisher.flush(timeout_s=60)
        await publisher.stop()


def first_occurrences(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_no_critical_loss_per_key_order_and_newest_market_data(steps: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        scenario = Scenario(Path(directory))
        asyncio.run(scenario.play(steps))

    sink = scenario.sink
    by_key = sink.by_key("ibkr.orders.v1")
    for key, sent in scenario.sent.items():
        received = first_occurrences([r.id for r in by_key.get(b"%d" % key, [])])
        assert received == sent, f"key {key}: order ids out of order or missing"

    quotes = sink.by_key("ibkr.marketdata.v1")
    for key, newest in scenario.newest_quote.items():
        values = [r.updated_ms for r in quotes[b"%d" % key]]
        assert values[-1] == newest
        distinct = first_occurrences([str(v) for v in values])
        assert [int(v) for v in distinct] == sorted(int(v) for v in distinct)
