"""What leaves the state destinations, and when (see ``bridge.state``).

- finished orders, ``retention_s`` after their last change: a background task puts their
  tombstones into the delivery buffer (critical: spooled, never dropped);
- a conid whose market data subscription is removed: its tombstone at once, and quotes of it
  that the gateway sent before it read the unsubscribe are dropped, so they cannot bring it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from bridge.codec import EnvelopeContext
from bridge.delivery.buffer import DeliveryBuffer
from bridge.events import Event, Order, Quote
from bridge.routing import Route, Router
from bridge.state import FinishedOrders, is_finished, quote_key_of_subscription, tombstone

log = logging.getLogger(__name__)


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class StateKeeper:
    """Tombstones for the state destinations of ``router``; a no-op for families without one."""

    def __init__(
        self, router: Router, buffer: DeliveryBuffer, envelope: EnvelopeContext, retention_s: float
    ) -> None:
        states = router.state_destinations()
        self._route: Callable[[Event], Route | None] = router.route
        self._orders = states.get(router.destination_of("orders"))
        self._quotes = states.get(router.destination_of("marketdata"))
        self._buffer, self._envelope = buffer, envelope
        self._retention_s = retention_s
        self.finished_orders = FinishedOrders(int(retention_s * 1000))
        self._unsubscribed: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def observe(self, events: Sequence[Event]) -> Sequence[Event]:
        """Note finished orders; the events without quotes of unsubscribed conids."""
        if self._orders is not None:
            for event in events:
                if type(event) is Order:
                    route = self._route(event)
                    if route is not None:
                        self.finished_orders.observe(route.key, is_finished(event), _monotonic_ms())
        if self._unsubscribed:
            gone = self._unsubscribed
            return [e for e in events if type(e) is not Quote or e.conid not in gone]
        return events

    def subscribed(self, subscription_key: str) -> None:
        key = quote_key_of_subscription(subscription_key)
        if key is not None and key.isdigit():
            self._unsubscribed.discard(int(key))

    def unsubscribed(self, subscription_key: str, desired_keys: Iterable[str]) -> None:
        """A subscription was removed: its conid leaves the market data state unless another
        desired subscription (``desired_keys``) still delivers it."""
        key = quote_key_of_subscription(subscription_key)
        if self._quotes is None or key is None:
            return
        if any(quote_key_of_subscription(other) == key for other in desired_keys):
            return
        now_ms = time.time_ns() // 1_000_000
        self._buffer.put(tombstone(self._quotes, key, self._envelope, now_ms, Quote.TYPE))
        if key.isdigit():
            self._unsubscribed.add(int(key))

    def start(self) -> None:
        if self._orders is not None and self._task is None:
            self._task = asyncio.create_task(self._remove_finished_orders(), name="finished-orders")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _remove_finished_orders(self) -> None:
        destination = self._orders
        assert destination is not None
        period_s = min(1.0, max(0.05, self._retention_s / 4))
        while True:
            await asyncio.sleep(period_s)
            keys = self.finished_orders.expired(_monotonic_ms())
            if keys:
                now_ms = time.time_ns() // 1_000_000
                self._buffer.put_many([tombstone(destination, key, self._envelope, now_ms) for key in keys])
                log.info("%d finished orders leave %s", len(keys), destination)
