"""What the session asks the gateway for (pure).

:class:`Subscription` is one standing subscription: its identity, the frames that
open and close it, and which incoming data proves it alive (:func:`watch_key`);
:class:`DesiredSubscriptions` is the set the session keeps replaying.
:class:`HistoryRequest` is an ``smh``, one-shot or a bars subscription's;
:class:`HistorySlots` queues them so that at most a fixed number hold a gateway slot
(reference §2.2: in flight, or a stream kept open) and frees a slot on every first
answer, timeout or ``umh``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass, replace
from typing import Any

from bridge.events import (
    AccountLedger,
    AccountSummary,
    Bars,
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

# Subscription channel -> the gateway topic that opens it.
CHANNEL_TOPICS = {"md": "smd", "or": "sor", "tr": "str", "pl": "spl", "sd": "ssd", "ld": "sld", "bd": "sbd"}


@dataclass(frozen=True, slots=True)
class Subscription:
    """One desired subscription: identity ``key``, its frames, and which data proves it alive."""

    key: str
    channel: str  # 'md', 'or', 'tr', 'pl', 'sd', 'ld', 'bd', 'mh'
    subscribe: str
    unsubscribe: str  # '' for bars: ``umh+<serverId>`` is known only once answered
    watch: str  # what :func:`watch_key` returns for its data
    conid: int | None = None
    stream: bool = False  # bars: keep the smh open for the updates that follow the first answer

    @classmethod
    def market_data(
        cls, conid: int, fields: Iterable[str | int], exchange: str | None = None
    ) -> Subscription:
        target = f"{conid}@{exchange}" if exchange else str(conid)
        return cls(f"md:{target}", "md", wire.smd(target, fields), wire.umd(target), f"md:{conid}", conid)

    @classmethod
    def market_target(cls, target: str, fields: Iterable[str | int]) -> Subscription:
        """``CONID``, ``CONID@EXCHANGE`` or a combo (``28812380;;;265598/1,8314/-1``, reference §2.1);
        a combo is watched, keyed and identified by its full target. Raises ValueError."""
        target = wire.market_data_target(target)
        if not wire.is_combo(target):
            conid, _, exchange = target.partition("@")
            return cls.market_data(int(conid), fields, exchange or None)
        spread = int(target.partition(wire.COMBO_SEPARATOR)[0])
        return cls(f"md:{target}", "md", wire.smd(target, fields), wire.umd(target), f"md:{target}", spread)

    @classmethod
    def bars(cls, conid: int, params: Mapping[str, Any], stream: bool = True) -> Subscription:
        """Historical bars (``smh``); the key names the request (``mh:265598:1d:5min:trades``)."""
        parts = [str(params.get(name, "")) for name in ("period", "bar", "source")]
        key = ":".join(["mh", str(conid), *parts]) + (":outside_rth" if params.get("outsideRth") else "")
        return cls(key, "mh", wire.smh(conid, params), "", key, conid, stream)

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
        conid_ex = event.conid_ex
        return f"md:{conid_ex}" if conid_ex and wire.is_combo(conid_ex) else f"md:{event.conid}"
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
        self._combos: set[str] = set()  # keys of combo market-data subscriptions
        for sub in subscriptions:
            self.put(sub)

    def __len__(self) -> int:
        return len(self._by_key)

    def __getitem__(self, key: str) -> Subscription:
        return self._by_key[key]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def values(self) -> ValuesView[Subscription]:
        return self._by_key.values()

    @property
    def has_combos(self) -> bool:
        return bool(self._combos)

    def put(self, sub: Subscription) -> Subscription | None:
        """Add or replace ``sub``; return the subscription it replaced."""
        old = self._by_key.get(sub.key)
        self._by_key[sub.key] = sub
        self._by_watch[sub.watch] = sub.key
        if sub.channel == "md" and wire.is_combo(sub.key):
            self._combos.add(sub.key)
        return old

    def pop(self, key: str) -> Subscription | None:
        self._combos.discard(key)
        sub = self._by_key.pop(key, None)
        if sub is not None and self._by_watch.get(sub.watch) == key:
            del self._by_watch[sub.watch]
        return sub

    def key_for(self, event: Event) -> str | None:
        """The key of the desired subscription whose liveness ``event`` proves."""
        watch = watch_key(event)
        return self._by_watch.get(watch) if watch else None

    def count(self, channel: str) -> int:
        return sum(1 for sub in self._by_key.values() if sub.channel == channel)

    def key_for_watch(self, watch: str) -> str | None:
        """The key of the desired subscription watched as ``watch`` (``md:<conid>``, ``or``, ...)."""
        return self._by_watch.get(watch)


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """An ``smh``: one-shot (its answer is released with ``umh``), or a bars subscription's
    (``key``), which stays open for updates when ``stream``."""

    conid: int
    frame: str
    key: str | None = None
    stream: bool = False

    @classmethod
    def bars(cls, conid: int, params: Mapping[str, Any] | None = None) -> HistoryRequest:
        return cls(conid, wire.smh(conid, params))

    @classmethod
    def of(cls, sub: Subscription) -> HistoryRequest:
        assert sub.conid is not None
        return cls(sub.conid, sub.subscribe, sub.key, sub.stream)


class HistorySlots:
    """``smh`` requests, at most ``max_concurrent`` holding a gateway slot: those in flight (sent,
    unanswered, each with its send time) and the streaming ones answered and kept open (by
    ``serverId``). The rest wait in order."""

    def __init__(self, max_concurrent: int, timeout_ns: int) -> None:
        self.max_concurrent = max_concurrent
        self.timeout_ns = timeout_ns
        self._queue: deque[HistoryRequest] = deque()
        self._in_flight: list[tuple[HistoryRequest, int]] = []
        self._open: dict[str, str] = {}  # serverId -> key of a streaming bars subscription

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def add(self, request: HistoryRequest) -> None:
        self._queue.append(request)

    def send(self, now_ns: int) -> list[str]:
        """Move queued requests into free slots; return their frames, in order."""
        frames: list[str] = []
        while self._queue and len(self._in_flight) + len(self._open) < self.max_concurrent:
            request = self._queue.popleft()
            self._in_flight.append((request, now_ns))
            frames.append(request.frame)
        return frames

    def requeue(self) -> list[str]:
        """The socket or its session is gone: one-shot requests in flight go back to the front, in
        order; subscriptions' requests are dropped (the session replays them). Returns the
        ``umh`` frames of the streams that were open (for a session that comes back on this socket)."""
        for request, _ in reversed(self._in_flight):
            if request.key is None:
                self._queue.appendleft(request)
        self._in_flight.clear()
        self._queue = deque(r for r in self._queue if r.key is None)
        released = [wire.umh(server_id) for server_id in self._open]
        self._open.clear()
        return released

    def answered(self, bars: Bars) -> list[str]:
        """Bars came: the first answer frees the oldest slot waiting on its conid, and is released
        with ``umh`` unless it belongs to a streaming subscription. Partial updates free nothing."""
        if bars.partial:
            return []
        for i, (request, _) in enumerate(self._in_flight):
            if request.conid == bars.conid:
                del self._in_flight[i]
                if request.stream and bars.server_id:
                    self._open[bars.server_id] = request.key or ""
                    return []
                break
        return [wire.umh(bars.server_id)] if bars.server_id else []

    def cancel(self, key: str) -> list[str]:
        """Drop a bars subscription: unsent, it is forgotten; in flight, its answer will be released;
        open, its ``umh`` is returned."""
        self._queue = deque(r for r in self._queue if r.key != key)
        self._in_flight = [(replace(r, stream=False) if r.key == key else r, s) for r, s in self._in_flight]
        server_ids = [server_id for server_id, held in self._open.items() if held == key]
        for server_id in server_ids:
            del self._open[server_id]
        return [wire.umh(server_id) for server_id in server_ids]

    def expire(self, now_ns: int) -> list[HistoryRequest]:
        """Free the slots of requests unanswered for ``timeout_ns``; return those requests."""
        timeout = self.timeout_ns
        expired = [r for r, sent in self._in_flight if now_ns - sent >= timeout]
        if expired:
            self._in_flight = [(r, s) for r, s in self._in_flight if now_ns - s < timeout]
        return expired

    def deadlines(self) -> Iterator[int]:
        return (sent + self.timeout_ns for _, sent in self._in_flight)
