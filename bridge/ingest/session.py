"""The gateway session as a sans-I/O state machine (pure).

The I/O layer feeds it what happened (``connection_opened``, ``events_received``
with the normalizer's output, ``connection_lost``, ``tick`` at ``next_deadline()``,
REST results) and drains three outputs: ``frames_to_send()`` (websocket text),
``events_to_publish()`` (:class:`~bridge.events.Lifecycle`) and
``actions_to_perform()`` (:data:`Action`: reconnect, REST calls, reconcile).

Rules (reference §1.3-§1.6, §6): the socket is usable only after ``sts``
authenticated:true (or ``system`` success plus a heartbeat when no ``sts``
comes); subscriptions are sent only while usable, and every (re)connect or
re-authentication replays exactly the desired set; ``tic`` keeps the session
alive; silence on the socket means reconnect; silence on a subscription means
resubscribe; ``smd`` is re-sent before the server-side expiry; ``smh`` holds at
most five slots and every answer is released with ``umh``; every disconnect or
auth loss while usable opens a gap that the next recovery closes, followed by a
reconcile request.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bridge.backoff import Backoff
from bridge.events import (
    AuthStatus,
    Bars,
    Control,
    ControlKind,
    Event,
    Heartbeat,
    Lifecycle,
    LifecycleKind,
    Quote,
    Scalar,
    SystemLogin,
)
from bridge.ingest import wire
from bridge.ingest.session_types import (
    NS_PER_MS,
    Action,
    ExpectSnapshot,
    Gap,
    GapTracker,
    PollAuthStatus,
    Reauthenticate,
    Reconcile,
    Reconnect,
    SessionSettings,
    SessionState,
    TickleRest,
    lifecycle_event,
)
from bridge.ingest.subscriptions import (
    DesiredSubscriptions,
    HistoryRequest,
    HistorySlots,
    Subscription,
)

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(seconds * _NS_PER_S)


# ------------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Live:
    """One subscription sent on the current socket."""

    sent_ns: int
    quiet_since_ns: int  # last data, or the last (re)send when none came since
    stale: bool = False


class GatewayProtocol:
    """Session state for one gateway, across any number of sockets."""

    def __init__(
        self,
        settings: SessionSettings | None = None,
        subscriptions: Iterable[Subscription] = (),
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings or SessionSettings()
        self.backoff = backoff or Backoff(self.settings.backoff_policy(), rng or random.Random())
        self.state = SessionState.DISCONNECTED
        self.session_epoch = 0
        self.reconnect_at_ns: int | None = None
        self._desired = DesiredSubscriptions(subscriptions)
        self._live: dict[str, _Live] = {}
        self._maybe_live: set[str] = set()  # sent before an auth loss on this socket
        self._pending_unsub: dict[str, str] = {}
        self._history = HistorySlots(self.settings.smh_max_concurrent, _ns(self.settings.smh_timeout_s))
        self._gaps = GapTracker()
        self._outbox: list[str] = []
        self._events: list[Lifecycle] = []
        self._actions: list[Action] = []
        self._reset_socket(0, None)

    # ------------------------------------------------------------------------------ outputs

    def frames_to_send(self) -> list[str]:
        frames, self._outbox = self._outbox, []
        return frames

    def events_to_publish(self) -> list[Lifecycle]:
        events, self._events = self._events, []
        return events

    def actions_to_perform(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    @property
    def usable(self) -> bool:
        return self.state is SessionState.AUTHENTICATED

    @property
    def gap_open(self) -> bool:
        return self._gaps.current is not None

    def desired(self) -> tuple[Subscription, ...]:
        return tuple(self._desired.values())

    def live_keys(self) -> frozenset[str]:
        return frozenset(self._live)

    def history_in_flight(self) -> int:
        return self._history.in_flight

    # ------------------------------------------------------------------------------ socket

    def _reset_socket(self, now_ns: int, session_id: str | None) -> None:
        self._session_id = session_id
        self._opened_ns = now_ns
        self._last_frame_ns = now_ns
        self._next_tic_ns = now_ns + _ns(self.settings.tic_interval_s)
        self._next_tickle_ns = now_ns + _ns(self.settings.tickle_interval_s)
        self._next_auth_poll_ns: int | None = None
        self._next_reauth_ns: int | None = None
        self._sts_auth: bool | None = None
        self._competing = False
        self._login_seen = False
        self._session_resent = False
        self._closing = False
        self._live.clear()
        self._maybe_live.clear()
        self._pending_unsub.clear()

    def connect_due(self, now_ns: int) -> bool:
        """Whether the backoff allows a connection attempt now."""
        return self.reconnect_at_ns is None or now_ns >= self.reconnect_at_ns

    def connection_opened(self, now_ns: int, session_id: str | None = None) -> None:
        """The websocket upgrade succeeded; ``session_id`` is the ``/tickle`` session."""
        self._reset_socket(now_ns, session_id)
        self._outbox.clear()
        self.state = SessionState.CONNECTED
        self.reconnect_at_ns = None
        if self.settings.send_session_message and session_id:
            self._outbox.append(wire.session(session_id))
        self._emit(LifecycleKind.CONNECTED, now_ns)

    def connection_lost(self, reason: str, now_ns: int) -> None:
        """The socket closed, was aborted, or was closed on our ``Reconnect`` request."""
        if self.state is SessionState.DISCONNECTED:
            self.connect_failed(reason, now_ns)
            return
        was_usable = self.usable
        self.state = SessionState.DISCONNECTED
        self._emit(LifecycleKind.DISCONNECTED, now_ns, reason)
        if was_usable:
            self._open_gap(reason, now_ns)
        self._history.requeue()
        self._reset_socket(now_ns, None)
        self._outbox.clear()
        self._schedule_reconnect(now_ns)

    def connect_failed(self, reason: str, now_ns: int) -> None:
        """A connection attempt (REST prerequisites or the upgrade) failed."""
        self.state = SessionState.DISCONNECTED
        self._emit(LifecycleKind.DISCONNECTED, now_ns, reason, detail={"attempt_failed": True})
        self._schedule_reconnect(now_ns)

    def _schedule_reconnect(self, now_ns: int) -> None:
        delay_s = self.backoff.next_delay_s()
        self.reconnect_at_ns = now_ns + _ns(delay_s)
        level = logging.INFO if self.backoff.failures <= 1 else logging.DEBUG  # the connection summarizes
        log.log(level, "gateway reconnect in %.2f s (failure %d)", delay_s, self.backoff.failures)

    # ------------------------------------------------------------------------------ frames in

    def events_received(self, events: Iterable[Event], now_ns: int) -> None:
        """Feed what the normalizer produced for frames received at ``now_ns``."""
        if self.state is SessionState.DISCONNECTED:
            return
        self._last_frame_ns = now_ns
        for event in events:
            self._on_event(event, now_ns)
        if self.usable:
            self.backoff.healthy(now_ns)

    def quotes_received(self, quotes: Iterable[Quote], now_ns: int) -> None:
        """``events_received`` for frames that each produced one quote (the reader's hot path):
        the same effect, each conid's subscription looked up once per batch."""
        if self.state is SessionState.DISCONNECTED:
            return
        self._last_frame_ns = now_ns
        if not self.usable:
            return
        by_key, live_of = self._desired.key_for_watch, self._live.get
        for conid in {quote.conid for quote in quotes}:
            key = by_key(f"md:{conid}")
            live = live_of(key) if key else None
            if live is not None:
                live.quiet_since_ns = now_ns
                live.stale = False
        self.backoff.healthy(now_ns)

    def _on_event(self, event: Event, now_ns: int) -> None:
        if isinstance(event, AuthStatus):
            self._on_auth_status(event, now_ns)
        elif isinstance(event, SystemLogin):
            self._login_seen = True
        elif isinstance(event, Heartbeat):
            if self.state is SessionState.CONNECTED and self._login_seen and self._sts_auth is None:
                self._become_usable(now_ns, "system login and heartbeat")
        elif isinstance(event, Bars):
            self._on_bars(event)
        elif isinstance(event, Control) and event.kind is ControlKind.WAITING_FOR_SESSION:
            if self._session_id and not self._session_resent and not self.usable:
                self._session_resent = True
                self._outbox.append(wire.session(self._session_id))
        elif self.usable:
            key = self._desired.key_for(event)
            live = self._live.get(key) if key else None
            if live is not None:
                live.quiet_since_ns = now_ns
                live.stale = False

    def _on_auth_status(self, status: AuthStatus, now_ns: int) -> None:
        if status.authenticated is not None:
            self._sts_auth = status.authenticated
        if status.competing is not None:
            if status.competing and not self._competing:
                self._emit(LifecycleKind.COMPETING, now_ns, status.fail or status.message or None)
            self._competing = status.competing
        reason = status.fail or status.message or None
        if self._sts_auth is True and not self._competing:
            if self.state is not SessionState.AUTHENTICATED:
                self._become_usable(now_ns, "sts authenticated")
        elif self._sts_auth is False or self._competing:
            cause = "competing session" if self._competing else "authenticated false"
            self._become_unusable(now_ns, f"{cause}: {reason}" if reason else cause)

    def auth_status_polled(self, authenticated: bool, competing: bool, now_ns: int) -> None:
        """The REST auth status came back; a recovered session gets a fresh socket."""
        if self.state is SessionState.UNAUTHENTICATED and authenticated and not competing:
            self._request_reconnect("authenticated again over REST")

    # ------------------------------------------------------------------------------ auth transitions

    def _become_usable(self, now_ns: int, reason: str) -> None:
        self.state = SessionState.AUTHENTICATED
        self.session_epoch += 1
        self._next_auth_poll_ns = self._next_reauth_ns = None
        self._emit(LifecycleKind.AUTHENTICATED, now_ns, reason)
        self._outbox.extend(self._pending_unsub.values())
        self._pending_unsub.clear()
        self._maybe_live.clear()
        for sub in self._desired.values():
            self._send_subscribe(sub, now_ns)
        self._emit(LifecycleKind.RESUBSCRIBED, now_ns, detail={"subscriptions": len(self._desired)})
        self._pump_history(now_ns)
        gap = self._gaps.close()
        if gap is not None:
            self._emit(LifecycleKind.GAP_END, now_ns, gap.reason, gap=gap)
            self._actions.append(Reconcile(gap.gap_id, gap.started_ns // NS_PER_MS))
        elif self.session_epoch == 1 and self.settings.reconcile_on_start:
            self._actions.append(Reconcile(None, None))

    def _become_unusable(self, now_ns: int, reason: str) -> None:
        if self.state is SessionState.UNAUTHENTICATED:
            return
        was_usable = self.usable
        self.state = SessionState.UNAUTHENTICATED
        self._emit(LifecycleKind.UNAUTHENTICATED, now_ns, reason)
        self._outbox = [f for f in self._outbox if not _is_subscribe(f)]
        self._maybe_live = set(self._live)
        self._live.clear()
        self._history.requeue()
        self.backoff.unhealthy()
        if was_usable:
            self._open_gap(reason, now_ns)
        self._next_auth_poll_ns = now_ns
        self._next_reauth_ns = now_ns if self.settings.reauthenticate else None
        self._poll_auth(now_ns)

    def _poll_auth(self, now_ns: int) -> None:
        if self._next_auth_poll_ns is not None and now_ns >= self._next_auth_poll_ns:
            self._actions.append(PollAuthStatus())
            self._next_auth_poll_ns = now_ns + _ns(self.settings.auth_poll_s)
        if self._next_reauth_ns is not None and now_ns >= self._next_reauth_ns:
            self._actions.append(Reauthenticate())
            self._next_reauth_ns = now_ns + _ns(self.settings.reauthenticate_interval_s)

    def _open_gap(self, reason: str, now_ns: int) -> None:
        gap = self._gaps.open(reason, now_ns)
        if gap is not None:
            self._emit(LifecycleKind.GAP_START, now_ns, reason, gap=gap)

    def _request_reconnect(self, reason: str) -> None:
        if not self._closing and self.state is not SessionState.DISCONNECTED:
            self._closing = True
            log.warning("gateway socket reconnect requested: %s", reason)
            self._actions.append(Reconnect(reason))

    # ------------------------------------------------------------------------------ subscriptions

    def subscribe(self, sub: Subscription, now_ns: int) -> None:
        """Add (or replace) a desired subscription; sent now only if the socket is usable."""
        old = self._desired.put(sub)
        if not self.usable:
            return
        if old is not None and sub.key in self._live:
            if old.subscribe == sub.subscribe:
                return
            if sub.channel != "md":
                self._outbox.append(old.unsubscribe)
        self._send_subscribe(sub, now_ns)

    def unsubscribe(self, key: str, now_ns: int) -> bool:
        """Drop a desired subscription; returns whether it was desired."""
        sub = self._desired.pop(key)
        if sub is None:
            return False
        if self._live.pop(key, None) is not None:
            self._outbox.append(sub.unsubscribe)
        elif key in self._maybe_live:
            self._pending_unsub[key] = sub.unsubscribe
        return True

    def request_history(self, request: HistoryRequest, now_ns: int) -> None:
        """Queue a one-shot ``smh``; at most ``smh_max_concurrent`` are in flight."""
        self._history.add(request)
        if self.usable:
            self._pump_history(now_ns)

    def _send_subscribe(
        self, sub: Subscription, now_ns: int, quiet_since_ns: int | None = None, stale: bool = False
    ) -> None:
        if sub.channel == "md":
            self._actions.append(ExpectSnapshot(sub.key.partition(":")[2]))
        self._outbox.append(sub.subscribe)
        quiet = now_ns if quiet_since_ns is None else quiet_since_ns
        self._live[sub.key] = _Live(sent_ns=now_ns, quiet_since_ns=quiet, stale=stale)

    def _pump_history(self, now_ns: int) -> None:
        self._outbox.extend(self._history.send(now_ns))

    def _on_bars(self, bars: Bars) -> None:
        self._history.answered(bars.conid)
        if bars.server_id:
            self._outbox.append(wire.umh(bars.server_id))
        if self.usable:
            self._pump_history(self._last_frame_ns)

    # ------------------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        """When ``tick`` must next run (ns, same clock as ``now_ns``); None: nothing pending."""
        if self.state is SessionState.DISCONNECTED:
            return self.reconnect_at_ns
        deadlines = [self._next_tic_ns, self._next_tickle_ns]
        if not self._closing:
            deadlines.append(self._last_frame_ns + _ns(self.settings.stale_after_s))
            if self.state is SessionState.CONNECTED:
                deadlines.append(self._opened_ns + _ns(self.settings.auth_timeout_s))
        for optional in (self._next_auth_poll_ns, self._next_reauth_ns):
            if optional is not None:
                deadlines.append(optional)
        deadlines.extend(self._history.deadlines())
        deadlines.extend(self._subscription_deadlines())
        return min(deadlines)

    def _subscription_deadlines(self) -> Iterable[int]:
        refresh = _ns(self.settings.smd_refresh_s)
        for key, live in self._live.items():
            sub = self._desired[key]
            if sub.channel == "md":
                yield live.sent_ns + refresh
            cadence = self.settings.expected_cadence_s.get(sub.channel)
            if cadence is not None:
                yield live.quiet_since_ns + _ns(cadence)

    def tick(self, now_ns: int) -> None:
        """Run every timer that is due at ``now_ns``."""
        if self.state is SessionState.DISCONNECTED:
            return
        if now_ns >= self._next_tic_ns:
            self._outbox.append(wire.tic())
            self._next_tic_ns = now_ns + _ns(self.settings.tic_interval_s)
        if now_ns >= self._next_tickle_ns:
            self._actions.append(TickleRest())
            self._next_tickle_ns = now_ns + _ns(self.settings.tickle_interval_s)
        self._check_socket(now_ns)
        self._poll_auth(now_ns)
        self._expire_history(now_ns)
        if self.usable:
            self._check_subscriptions(now_ns)

    def _check_socket(self, now_ns: int) -> None:
        silent_ns = now_ns - self._last_frame_ns
        if silent_ns >= _ns(self.settings.stale_after_s):
            self._request_reconnect(f"stale: no frame for {silent_ns / _NS_PER_S:.1f} s")
        elif self.state is SessionState.CONNECTED and (
            now_ns - self._opened_ns >= _ns(self.settings.auth_timeout_s)
        ):
            self._request_reconnect(f"not authenticated within {self.settings.auth_timeout_s} s")

    def _check_subscriptions(self, now_ns: int) -> None:
        refresh = _ns(self.settings.smd_refresh_s)
        for key, live in list(self._live.items()):
            sub = self._desired[key]
            cadence = self.settings.expected_cadence_s.get(sub.channel)
            if cadence is not None and now_ns - live.quiet_since_ns >= _ns(cadence):
                self._resubscribe_stale(sub, live, now_ns)
            elif sub.channel == "md" and now_ns - live.sent_ns >= refresh:
                # Refresh before the server-side expiry; silence is still measured from the data.
                self._send_subscribe(sub, now_ns, live.quiet_since_ns, live.stale)

    def _resubscribe_stale(self, sub: Subscription, live: _Live, now_ns: int) -> None:
        """Silent beyond its cadence: resubscribe; report once per silent stretch."""
        if not live.stale:
            silent_s = (now_ns - live.quiet_since_ns) / _NS_PER_S
            reason = f"silent for {silent_s:.1f} s"
            self._emit(LifecycleKind.STALE, now_ns, reason, detail={"subscription": sub.key})
        if sub.channel != "md":
            self._outbox.append(sub.unsubscribe)
        self._send_subscribe(sub, now_ns, now_ns, stale=True)

    def _expire_history(self, now_ns: int) -> None:
        expired = self._history.expire(now_ns)
        if not expired:
            return
        for request in expired:
            log.warning("historical request for conid %s got no answer; slot released", request.conid)
        if self.usable:
            self._pump_history(now_ns)

    # ------------------------------------------------------------------------------ lifecycle

    def reconcile_finished(
        self, gap_id: str | None, orders: int, executions: int, now_ns: int, error: str | None = None
    ) -> None:
        """Report the outcome of a ``Reconcile`` action as a lifecycle event."""
        detail: dict[str, Scalar] = {"orders": orders, "executions": executions}
        if gap_id is not None:
            detail["gap_id"] = gap_id
        if error is not None:
            detail["error"] = error
        self._emit(LifecycleKind.RECONCILED, now_ns, error, detail=detail)

    def _emit(
        self,
        kind: LifecycleKind,
        now_ns: int,
        reason: str | None = None,
        gap: Gap | None = None,
        detail: Mapping[str, Scalar] | None = None,
    ) -> None:
        self._events.append(lifecycle_event(kind, now_ns, self.session_epoch, reason, gap, detail))


def _is_subscribe(frame: str) -> bool:
    """Subscribe verbs start with 's' (smd, smh, sor, str, spl, ssd, sld, sbd)."""
    return frame[:1] == "s" and frame[3:4] in ("+", "")
