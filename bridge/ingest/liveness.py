"""What the session has asked the gateway for on the current socket (pure).

:class:`LiveSubscriptions` holds the desired set and the queued history requests across sockets
and, per socket, what was sent, when data last proved each subscription alive and which ``smh``
slots are taken. It returns the frames to send; the session decides when (only while usable)
and reports what went stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from bridge.errors import SubscriptionRefused
from bridge.events import Bars, Event, Quote
from bridge.ingest.session_types import NS_PER_S, SessionSettings
from bridge.ingest.subscriptions import DesiredSubscriptions, HistoryRequest, HistorySlots, Subscription
from bridge.ingest.wire import is_combo


@dataclass(slots=True)
class _Live:
    """One subscription sent on the current socket."""

    sent_ns: int
    quiet_since_ns: int  # last data, or the last (re)send when none came since
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Silent:
    """A live subscription that stayed silent beyond its channel's expected cadence."""

    key: str
    silent_s: float
    first: bool  # the first resubscribe of this silent stretch (reported once)


class LiveSubscriptions:
    """The desired set, and for the current socket what is live, maybe live, or to be closed."""

    def __init__(
        self,
        subscriptions: Iterable[Subscription],
        settings: SessionSettings,
        expect_snapshot: Callable[[str], None],
    ) -> None:
        self.desired = DesiredSubscriptions(subscriptions)
        self._expect_snapshot = expect_snapshot
        self._refresh_ns = int(settings.smd_refresh_s * NS_PER_S)
        self._cadence_ns = {ch: int(s * NS_PER_S) for ch, s in settings.expected_cadence_s.items()}
        self._live: dict[str, _Live] = {}
        self._maybe_live: set[str] = set()  # sent before an auth loss on this socket
        self._pending_unsub: dict[str, str] = {}
        self.history = HistorySlots(settings.smh_max_concurrent, int(settings.smh_timeout_s * NS_PER_S))

    def live_keys(self) -> frozenset[str]:
        return frozenset(self._live)

    def stale_keys(self) -> frozenset[str]:
        """Live subscriptions silent beyond their channel's expected cadence (until data comes)."""
        return frozenset(key for key, live in self._live.items() if live.stale)

    def socket_lost(self) -> None:
        """The socket is gone: one-shot history requests in flight go back to the queue; bars
        subscriptions die with the socket (reference §6.3) and are replayed from the desired set."""
        self.history.requeue()

    def socket_reset(self) -> None:
        """A new socket (or none): nothing is live on it."""
        self._live.clear()
        self._maybe_live.clear()
        self._pending_unsub.clear()

    def auth_lost(self) -> None:
        """What was live may still be subscribed server-side; it is no longer proven live;
        history requests in flight go back to the queue."""
        self._maybe_live = set(self._live)
        self._live.clear()
        for frame in self.history.requeue():  # open bars streams: released if auth returns on this socket
            self._pending_unsub[frame] = frame

    def replay_all(self, now_ns: int) -> list[str]:
        """The socket became usable: close what was dropped while blind, subscribe the desired set."""
        frames = list(self._pending_unsub.values())
        self._pending_unsub.clear()
        self._maybe_live.clear()
        frames += [frame for sub in self.desired.values() if (frame := self._send(sub, now_ns))]
        return frames + self.history.send(now_ns)

    def put(self, sub: Subscription, now_ns: int, usable: bool) -> tuple[list[str], Subscription | None]:
        """Add or replace a desired subscription: (the frames to send now, none unless usable; the
        subscription it replaced). Raises SubscriptionRefused for a bars subscription beyond the
        gateway's ``smh`` slots."""
        limit = self.history.max_concurrent
        if sub.channel == "mh" and sub.key not in self.desired and self.desired.count("mh") >= limit:
            raise SubscriptionRefused(
                f"bars {sub.key}: the gateway serves at most {limit} historical-bars requests (smh) at once "
                f"and {limit} bars subscriptions are held; remove one first (DELETE /subscriptions)"
            )
        old = self.desired.put(sub)
        if not usable:
            return [], old
        frames = []
        if old is not None and old.key in self._live:
            if old.subscribe == sub.subscribe and old.stream == sub.stream:
                return [], old
            if sub.channel == "mh":
                frames += self.history.cancel(old.key)
            elif sub.channel != "md":
                frames.append(old.unsubscribe)
        # A replaced subscription keeps its silence clock: only data proves it alive.
        live = self._live.get(sub.key)
        frame = self._send(sub, now_ns, live.quiet_since_ns, live.stale) if live else self._send(sub, now_ns)
        frames += [frame] if frame else self.history.send(now_ns)
        return frames, old

    def drop(self, key: str) -> tuple[bool, list[str]]:
        """Drop a desired subscription: (whether it was desired, frames to send now)."""
        sub = self.desired.pop(key)
        if sub is None:
            return False, []
        if sub.channel == "mh":
            self._live.pop(key, None)
            return True, self.history.cancel(key)  # umh+<serverId>, now or once answered
        if self._live.pop(key, None) is not None:
            return True, [sub.unsubscribe]
        if key in self._maybe_live:
            self._pending_unsub[key] = sub.unsubscribe
        return True, []

    def saw_event(self, event: Event, now_ns: int) -> bool:
        """Data arrived: the subscription it belongs to is alive. True when it had been stale."""
        key = self.desired.key_for(event)
        return key is not None and self._saw(key, now_ns)

    def saw_quotes(self, quotes: Sequence[Quote], now_ns: int) -> bool:
        """``saw_event`` for a run of quotes, each conid looked up once; a combo is watched by its
        full target (``subscriptions.watch_key``). True when one of them had been stale."""
        by_watch, resumed = self.desired.key_for_watch, False
        watched = {f"md:{conid}" for conid in {quote.conid for quote in quotes}}
        if self.desired.has_combos:
            watched.update(f"md:{q.conid_ex}" for q in quotes if q.conid_ex and is_combo(q.conid_ex))
        for watch in watched:
            key = by_watch(watch)
            if key is not None:
                resumed |= self._saw(key, now_ns)
        return resumed

    def _saw(self, key: str, now_ns: int) -> bool:
        live = self._live.get(key)
        if live is None:
            return False
        live.quiet_since_ns = now_ns
        was_stale, live.stale = live.stale, False
        return was_stale

    def request_history(self, request: HistoryRequest, now_ns: int, usable: bool) -> list[str]:
        """Queue a one-shot ``smh``; the frames of those that fit a free slot now (none unless usable)."""
        self.history.add(request)
        return self.history.send(now_ns) if usable else []

    def history_answered(self, bars: Bars, now_ns: int, usable: bool) -> list[str]:
        """Bars came: a first answer frees its slot (released with ``umh`` unless its subscription
        streams); the frames to send now, queued requests that fit included."""
        frames = self.history.answered(bars)
        return frames + self.history.send(now_ns) if usable else frames

    def deadlines(self) -> Iterator[int]:
        yield from self.history.deadlines()
        for key, live in self._live.items():
            channel = self.desired[key].channel
            if channel == "md":
                yield live.sent_ns + self._refresh_ns
            cadence = self._cadence_ns.get(channel)
            if cadence is not None:
                yield live.quiet_since_ns + cadence

    def check(self, now_ns: int) -> tuple[list[str], list[Silent]]:
        """Resubscribe what went silent, refresh ``smd`` before the server-side expiry:
        (frames to send, the silent subscriptions)."""
        frames: list[str] = []
        silent: list[Silent] = []
        for key, live in list(self._live.items()):
            sub = self.desired[key]
            cadence = self._cadence_ns.get(sub.channel)
            if sub.channel == "mh":  # bars are event-driven: never judged silent
                continue
            if cadence is not None and now_ns - live.quiet_since_ns >= cadence:
                silent.append(Silent(key, (now_ns - live.quiet_since_ns) / NS_PER_S, not live.stale))
                if sub.channel != "md":
                    frames.append(sub.unsubscribe)
                frames.append(self._send(sub, now_ns, now_ns, stale=True) or "")
            elif sub.channel == "md" and now_ns - live.sent_ns >= self._refresh_ns:
                # Refresh before the server-side expiry; silence is still measured from the data.
                frames.append(self._send(sub, now_ns, live.quiet_since_ns, live.stale) or "")
        return frames, silent

    def expire_history(self, now_ns: int, usable: bool) -> tuple[list[HistoryRequest], list[str]]:
        """Free the slots of unanswered history requests: (those requests, frames to send now).
        A bars subscription's request is asked again (at the back of the queue): it stays desired."""
        expired = self.history.expire(now_ns)
        for request in expired:
            key = request.key
            if key is not None and key in self.desired and request == HistoryRequest.of(self.desired[key]):
                self.history.add(request)
        return expired, self.history.send(now_ns) if expired and usable else []

    def _send(
        self, sub: Subscription, now_ns: int, quiet_since_ns: int | None = None, stale: bool = False
    ) -> str | None:
        """Mark ``sub`` sent; its frame, or None for bars, which wait for a slot (``history``)."""
        if sub.channel == "md":
            self._expect_snapshot(sub.key.partition(":")[2])
        quiet = now_ns if quiet_since_ns is None else quiet_since_ns
        self._live[sub.key] = _Live(sent_ns=now_ns, quiet_since_ns=quiet, stale=stale)
        if sub.channel == "mh":
            self.history.add(HistoryRequest.of(sub))
            return None
        return sub.subscribe
