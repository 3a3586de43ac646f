"""What the session asks the gateway for (pure).

:class:`Subscription` is one standing subscription: its identity, the frames that
open and close it, and which incoming data proves it alive (:func:`watch_key`);
:class:`DesiredSubscriptions` is the set the session keeps replaying.
:class:`HistoryRequest` is a one-shot ``smh``; :class:`HistorySlots` queues them
so that at most a fixed number are in flight (reference §2.2) and frees a slot on
every answer or timeout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from typing import Any

from bridge.events import (
    AccountLedger,
    AccountSummary,
    BookLadder,
    Control,
    ControlKind,
    Event,
    Execution,
    Order,
    Pnl,
    Quote,
)
from bridge.ingest import wire


@dataclass(frozen=True, slots=True)
class Subscription:
    """One desired subscription: identity ``key``, its frames, and which data proves it alive."""

    key: str
    channel: str  # 'md', 'or', 'tr', 'pl', 'sd', 'ld', 'bd'
    subscribe: str
    unsubscribe: str
    watch: str  # what :func:`watch_key` returns for its data
    conid: int | None = None

    @classmethod
    def market_data(
        cls, conid: int, fields: Iterable[str | int], exchange: str | None = None
    ) -> Subscription:
        target = f"{conid}@{exchange}" if exchange else str(conid)
        return cls(f"md:{target}", "md", wire.smd(target, fields), wire.umd(target), f"md:{conid}", conid)

    @classmethod
    def orders(cls, filters: list[str] | None = None) -> Subscription:
        return cls("or", "or", wire.sor(filters), wire.uor(), "or")

    @classmethod
    def trades(cls, realtime_updates_only: bool | None = None, days: int | None = None) -> Subscription:
        return cls("tr", "tr", wire.str_(realtime_updates_only, days), wire.utr(), "tr")

    @classmethod
    def pnl(cls) -> Subscription:
        return cls("pl", "pl", wire.spl(), wire.upl(), "pl")

    @classmethod
    def summary(
        cls, account: str, keys: list[str] | None = None, fields: list[str] | None = None
    ) -> Subscription:
        return cls(f"sd:{account}", "sd", wire.ssd(account, keys, fields), wire.usd(account), f"sd:{account}")

    @classmethod
    def ledger(
        cls, account: str, keys: list[str] | None = None, fields: list[str] | None = None
    ) -> Subscription:
        return cls(f"ld:{account}", "ld", wire.sld(account, keys, fields), wire.uld(account), f"ld:{account}")

    @classmethod
    def book(cls, account: str, conid: int, exchange: str | None = None) -> Subscription:
        frame = wire.sbd(account, conid, exchange)
        return cls(f"bd:{account}", "bd", frame, wire.ubd(account), f"bd:{conid}", conid)


def watch_key(event: Event) -> str | None:
    """Which subscription's liveness an incoming event proves (see ``Subscription.watch``)."""
    if isinstance(event, Quote):
        return f"md:{event.conid}"
    if isinstance(event, Order):
        return "or"
    if isinstance(event, Execution):
        return "tr"
    if isinstance(event, Control) and event.kind is ControlKind.SUBSCRIPTION_ACK and event.topic == "str":
        return "tr"
    if isinstance(event, Pnl):
        return "pl"
    if isinstance(event, AccountSummary):
        return f"sd:{event.account}"
    if isinstance(event, AccountLedger):
        return f"ld:{event.account}"
    if isinstance(event, BookLadder):
        return f"bd:{event.conid}"
    return None


class DesiredSubscriptions:
    """The desired set by key, indexed by ``Subscription.watch`` to find whose data arrived."""

    def __init__(self, subscriptions: Iterable[Subscription] = ()) -> None:
        self._by_key: dict[str, Subscription] = {}
        self._by_watch: dict[str, str] = {}  # Subscription.watch -> key
        for sub in subscriptions:
            self.put(sub)

    def __len__(self) -> int:
        return len(self._by_key)

    def __getitem__(self, key: str) -> Subscription:
        return self._by_key[key]

    def values(self) -> ValuesView[Subscription]:
        return self._by_key.values()

    def put(self, sub: Subscription) -> Subscription | None:
        """Add or replace ``sub``; return the subscription it replaced."""
        old = self._by_key.get(sub.key)
        self._by_key[sub.key] = sub
        self._by_watch[sub.watch] = sub.key
        return old

    def pop(self, key: str) -> Subscription | None:
        sub = self._by_key.pop(key, None)
        if sub is not None and self._by_watch.get(sub.watch) == key:
            del self._by_watch[sub.watch]
        return sub

    def key_for(self, event: Event) -> str | None:
        """The key of the desired subscription whose liveness ``event`` proves."""
        watch = watch_key(event)
        return self._by_watch.get(watch) if watch else None

    def key_for_watch(self, watch: str) -> str | None:
        """The key of the desired subscription watched as ``watch`` (``md:<conid>``, ``or``, ...)."""
        return self._by_watch.get(watch)


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """A one-shot ``smh`` (historical bars); its answer is always released with ``umh``."""

    conid: int
    frame: str

    @classmethod
    def bars(cls, conid: int, params: Mapping[str, Any] | None = None) -> HistoryRequest:
        return cls(conid, wire.smh(conid, params))


class HistorySlots:
    """Queued ``smh`` requests, at most ``max_concurrent`` in flight, each with its send time."""

    def __init__(self, max_concurrent: int, timeout_ns: int) -> None:
        self.max_concurrent = max_concurrent
        self.timeout_ns = timeout_ns
        self._queue: deque[HistoryRequest] = deque()
        self._in_flight: list[tuple[HistoryRequest, int]] = []

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def add(self, request: HistoryRequest) -> None:
        self._queue.append(request)

    def send(self, now_ns: int) -> list[str]:
        """Move queued requests into free slots; return their frames, in order."""
        frames: list[str] = []
        while self._queue and len(self._in_flight) < self.max_concurrent:
            request = self._queue.popleft()
            self._in_flight.append((request, now_ns))
            frames.append(request.frame)
        return frames

    def requeue(self) -> None:
        """The socket is gone: every request in flight goes back to the front, in order."""
        for request, _ in reversed(self._in_flight):
            self._queue.appendleft(request)
        self._in_flight.clear()

    def answered(self, conid: int) -> None:
        """Bars came for ``conid``: free the oldest slot waiting on it."""
        for i, (request, _) in enumerate(self._in_flight):
            if request.conid == conid:
                del self._in_flight[i]
                break

    def expire(self, now_ns: int) -> list[HistoryRequest]:
        """Free the slots of requests unanswered for ``timeout_ns``; return those requests."""
        timeout = self.timeout_ns
        expired = [r for r, sent in self._in_flight if now_ns - sent >= timeout]
        if expired:
            self._in_flight = [(r, s) for r, s in self._in_flight if now_ns - s < timeout]
        return expired

    def deadlines(self) -> Iterator[int]:
        return (sent + self.timeout_ns for _, sent in self._in_flight)
