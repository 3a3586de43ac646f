"""The gateway session as a sans-I/O state machine (pure): the one object the socket drives.

:class:`GatewaySession` owns the normalizer and every piece of protocol state. The I/O layer
feeds it what happened (``connection_opened``, ``receive_frames`` with the messages read,
``connection_lost``, ``tick`` at ``next_deadline()``, REST results) and drains three outputs:
``events_received()`` (the normalized events, reconciled rows and lifecycle events, in order),
``frames_to_send()`` (websocket text) and ``actions_to_perform()`` (:data:`Action`: reconnect,
REST calls, reconcile).

Rules (reference §1.3-§1.6, §6): the socket is usable only after ``sts``
authenticated:true (or ``system`` success plus a heartbeat when no ``sts``
comes); subscriptions are sent only while usable, and every (re)connect or
re-authentication replays exactly the desired set; every ``smd`` sent flags the
next frame of its target as a snapshot; ``tic`` keeps the session alive; silence
on the socket means reconnect; silence on a subscription means resubscribe;
``smd`` is re-sent before the server-side expiry; ``smh`` holds at most five
slots and every answer is released with ``umh``; every disconnect or auth loss
while usable opens a gap that the next recovery closes, followed by a reconcile
request; executions the socket replays from before that recovery are marked
reconciled, like the REST copies. A subscription silent beyond its channel's
expected cadence opens a gap too, closed once no subscription is silent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.backoff import Backoff
from bridge.events import (
    AuthStatus,
    Bars,
    Control,
    ControlKind,
    Event,
    Heartbeat,
    LifecycleKind,
    Quote,
    Scalar,
    SystemLogin,
)
from bridge.ingest import wire
from bridge.ingest.liveness import LiveSubscriptions
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.ingest.reconcile import Reconciliation
from bridge.ingest.session_types import (
    NS_PER_MS,
    NS_PER_S,
    Action,
    Gap,
    GapTracker,
    Reconcile,
    Reconnect,
    SessionSettings,
    SessionState,
    TickleRest,
    lifecycle_event,
)
from bridge.ingest.subscriptions import HistoryRequest, Subscription
from bridge.ingest.timers import SocketTimers

log = logging.getLogger(__name__)

Rows = Iterable[Mapping[str, Any]]  # REST rows (orders, trades)


SILENCE = "silent"  # the first word of a silence gap's reason (its metrics label)


def _ns(seconds: float) -> int:
    return int(seconds * NS_PER_S)


def _log_reconnect(delay_s: float, failures: int) -> None:
    """The first retry at INFO; later ones at DEBUG (the connection logs a periodic summary)."""
    log.log(logging.INFO if failures <= 1 else logging.DEBUG, "gateway reconnect in %.2f s (failure %d)",
            delay_s, failures)  # fmt: skip


class GatewaySession:
    """Session state for one gateway, across any number of sockets."""

    def __init__(
        self,
        settings: SessionSettings | None = None,
        subscriptions: Iterable[Subscription] = (),
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        normalizer: Normalizer | None = None,
        books_without_account: Iterable[tuple[int, str | None]] = (),
    ) -> None:
        self.settings = settings or SessionSettings()
        self.normalizer = normalizer or Normalizer()
        self.backoff = backoff or Backoff(self.settings.backoff_policy(), rng or random.Random())
        self.state = SessionState.DISCONNECTED
        self.session_epoch = 0
        self.reconnect_at_ns: int | None = None
        self.last_frame_ns: int | None = None  # when the last frame arrived, on any socket
        self.default_account: str | None = None  # the gateway's selected account, once listed
        self._books_without_account = list(books_without_account)  # (conid, exchange): see account_listed
        self._subs = LiveSubscriptions(subscriptions, self.settings, self.normalizer.expect_snapshot)
        self._gaps = GapTracker()
        self._reconciliation = Reconciliation(self.normalizer)
        self._outbox: list[str] = []
        self._events: list[Event] = []
        self._actions: list[Action] = []
        self._reset_socket(0, None)

    # ------------------------------------------------------------------------------ outputs

    def frames_to_send(self) -> list[str]:
        frames, self._outbox = self._outbox, []
        return frames

    def events_received(self) -> list[Event]:
        """Everything to publish since the last call, in order: the events of the frames received,
        reconciled orders and executions, and the session's own lifecycle events."""
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
        return tuple(self._subs.desired.values())

    def live_keys(self) -> frozenset[str]:
        return self._subs.live_keys()

    def stale_keys(self) -> frozenset[str]:
        return self._subs.stale_keys()

    def history_in_flight(self) -> int:
        return self._subs.history.in_flight

    # ------------------------------------------------------------------------------ socket

    def _reset_socket(self, now_ns: int, session_id: str | None) -> None:
        self._session_id = session_id
        self._timers = SocketTimers(self.settings, now_ns)
        self._sts_auth: bool | None = None
        self._competing = False
        self._login_seen = False
        self._session_resent = False
        self._closing = False
        self._subs.socket_reset()

    def connection_opened(self, now_ns: int, session_id: str | None = None) -> None:
        """The websocket upgrade succeeded; ``session_id`` is the ``/tickle`` session. Market data
        starts again from fresh snapshots; orders and fills are kept."""
        self.normalizer.connection_reset()
        self._reset_socket(now_ns, session_id)
        self._outbox.clear()
        self.state = SessionState.CONNECTED
        self.reconnect_at_ns = None
        if self.settings.send_session_message and session_id:
            self._outbox.append(wire.session(session_id))
        self._emit(LifecycleKind.CONNECTED, now_ns)

    def connection_lost(self, reason: str, now_ns: int) -> None:
        """The socket closed, was aborted, or was closed on our ``Reconnect`` request; nothing
        queued for it is sent."""
        if self.state is SessionState.DISCONNECTED:
            self.connect_failed(reason, now_ns)
            return
        was_usable = self.usable
        self.state = SessionState.DISCONNECTED
        self._emit(LifecycleKind.DISCONNECTED, now_ns, reason)
        if was_usable:
            self._open_gap(reason, now_ns)
        self._subs.socket_lost()
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
        _log_reconnect(delay_s, self.backoff.failures)

    # ------------------------------------------------------------------------------ frames in

    def receive_frames(self, frames: Sequence[bytes | str], now_ns: int) -> None:
        """Normalize messages received together at ``now_ns`` and apply the session's rules.

        A run of frames that each normalize to one quote (the bulk of the traffic; a quote never
        makes the session act, send or report) only proves its subscriptions alive, once per
        run; any other frame ends the run and is applied on its own, so the order holds.
        """
        if not frames:
            return
        normalize, out = self.normalizer.normalize, self._events
        run_start = len(out)
        for data in frames:
            events = normalize(data, now_ns)
            if len(events) == 1 and type(events[0]) is Quote:
                out.append(events[0])
                continue
            if len(out) > run_start:
                self._quotes_seen(out, run_start, now_ns)
            out.extend(self._reconciliation.mark_resynced(events))
            self.apply_events(events, now_ns)
            run_start = len(out)
        if len(out) > run_start:
            self._quotes_seen(out, run_start, now_ns)
        self.last_frame_ns = now_ns

    def _quotes_seen(self, out: list[Event], start: int, now_ns: int) -> None:
        if self.state is SessionState.DISCONNECTED:
            return
        self._timers.frame_received(now_ns)
        if self.usable:
            if self._subs.saw_quotes(out[start:], now_ns):  # type: ignore[arg-type]
                self._close_silence_gap(now_ns)
            self.backoff.healthy(now_ns)

    def apply_events(self, events: Iterable[Event], now_ns: int) -> None:
        """Apply the session's rules to normalized events received at ``now_ns`` (what
        ``receive_frames`` does after normalizing; the events are not published again)."""
        if self.state is SessionState.DISCONNECTED:
            return
        self._timers.frame_received(now_ns)
        for event in events:
            self._on_event(event, now_ns)
        if self.usable:
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
            self._outbox.extend(self._subs.history_answered(event, now_ns, self.usable))
        elif isinstance(event, Control) and event.kind is ControlKind.WAITING_FOR_SESSION:
            if self._session_id and not self._session_resent and not self.usable:
                self._session_resent = True
                self._outbox.append(wire.session(self._session_id))
        elif self.usable and self._subs.saw_event(event, now_ns):
            self._close_silence_gap(now_ns)

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
        self._timers.auth_ok()
        self._emit(LifecycleKind.AUTHENTICATED, now_ns, reason)
        self._outbox.extend(self._subs.replay_all(now_ns))
        self._emit(LifecycleKind.RESUBSCRIBED, now_ns, detail={"subscriptions": len(self._subs.desired)})
        if not self._close_gap(now_ns) and self.session_epoch == 1 and self.settings.reconcile_on_start:
            self._reconcile(Reconcile(None, None), now_ns)

    def _become_unusable(self, now_ns: int, reason: str) -> None:
        if self.state is SessionState.UNAUTHENTICATED:
            return
        was_usable = self.usable
        self.state = SessionState.UNAUTHENTICATED
        self._emit(LifecycleKind.UNAUTHENTICATED, now_ns, reason)
        self._outbox = [f for f in self._outbox if not _is_subscribe(f)]
        self._subs.auth_lost()
        self.backoff.unhealthy()
        if was_usable:
            self._open_gap(reason, now_ns)
        self._timers.auth_lost(now_ns)
        self._poll_auth(now_ns)

    def _poll_auth(self, now_ns: int) -> None:
        self._actions += self._timers.polls_due(now_ns)

    def _open_gap(self, reason: str, now_ns: int) -> None:
        gap = self._gaps.open(reason, now_ns)
        if gap is not None:
            self._emit(LifecycleKind.GAP_START, now_ns, reason, gap=gap)

    def _close_gap(self, now_ns: int) -> bool:
        """Close the open gap (reported, then reconciled); False when none was open."""
        gap = self._gaps.close()
        if gap is None:
            return False
        self._emit(LifecycleKind.GAP_END, now_ns, gap.reason, gap=gap)
        self._reconcile(Reconcile(gap.gap_id, gap.started_ns // NS_PER_MS), now_ns)
        return True

    def _close_silence_gap(self, now_ns: int) -> None:
        """A gap opened by silence closes once no live subscription is silent."""
        gap = self._gaps.current
        if gap is not None and gap.reason.startswith(SILENCE) and not self._subs.stale_keys():
            self._close_gap(now_ns)

    def _request_reconnect(self, reason: str) -> None:
        if not self._closing and self.state is not SessionState.DISCONNECTED:
            self._closing = True
            log.warning("gateway socket reconnect requested: %s", reason)
            self._actions.append(Reconnect(reason))

    # ------------------------------------------------------------------------------ subscriptions

    def subscribe(self, sub: Subscription, now_ns: int) -> Subscription | None:
        """Add (or replace) a desired subscription; sent now only if the socket is usable. Returns
        the subscription it replaced (a second book ladder for one account replaces the first).

        Raises SubscriptionRefused for a bars subscription beyond ``smh_max_concurrent``."""
        frames, replaced = self._subs.put(sub, now_ns, self.usable)
        self._outbox.extend(frames)
        return replaced

    def account_listed(self, account: str, now_ns: int) -> None:
        """The gateway's selected account (``/iserver/accounts``), the default for book ladders:
        those waiting for an account (``books_without_account``) are subscribed now."""
        self.default_account = account
        waiting, self._books_without_account = self._books_without_account, []
        for conid, exchange in waiting:
            self.subscribe(Subscription.book(account, conid, exchange), now_ns)

    def unsubscribe(self, key: str, now_ns: int) -> bool:
        """Drop a desired subscription; returns whether it was desired."""
        found, frames = self._subs.drop(key)
        self._outbox.extend(frames)
        self._close_silence_gap(now_ns)
        return found

    def request_history(self, request: HistoryRequest, now_ns: int) -> None:
        """Queue a one-shot ``smh``; at most ``smh_max_concurrent`` are in flight."""
        self._outbox.extend(self._subs.request_history(request, now_ns, self.usable))

    # ------------------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        """When ``tick`` must next run (ns, same clock as ``now_ns``); None: nothing pending."""
        if self.state is SessionState.DISCONNECTED:
            return self.reconnect_at_ns
        deadlines = self._timers.deadlines(self.state is SessionState.CONNECTED, self._closing)
        deadlines.extend(self._subs.deadlines())
        return min(deadlines)

    def tick(self, now_ns: int) -> None:
        """Run every timer that is due at ``now_ns``."""
        if self.state is SessionState.DISCONNECTED:
            return
        tic, tickle = self._timers.keepalives_due(now_ns)
        if tic:
            self._outbox.append(wire.tic())
        if tickle:
            self._actions.append(TickleRest())
        reason = self._timers.silence(now_ns, self.state is SessionState.CONNECTED)
        if reason is not None:
            self._request_reconnect(reason)
        self._poll_auth(now_ns)
        self._expire_history(now_ns)
        if self.usable:
            self._check_subscriptions(now_ns)

    def _check_subscriptions(self, now_ns: int) -> None:
        """Silent beyond its cadence: resubscribe; report once per silent stretch, which opens a
        gap (data may be missing) that closes when data comes again."""
        frames, silent = self._subs.check(now_ns)
        for quiet in silent:
            if quiet.first:
                reason = f"{SILENCE} for {quiet.silent_s:.1f} s"
                self._emit(LifecycleKind.STALE, now_ns, reason, detail={"subscription": quiet.key})
                self._open_gap(f"{SILENCE}: {quiet.key} for {quiet.silent_s:.1f} s", now_ns)
        self._outbox.extend(frames)

    def _expire_history(self, now_ns: int) -> None:
        expired, frames = self._subs.expire_history(now_ns, self.usable)
        for request in expired:
            log.warning("historical request for conid %s got no answer; slot released", request.conid)
        self._outbox.extend(frames)

    # ------------------------------------------------------------------------------ reconciliation

    def _reconcile(self, action: Reconcile, now_ns: int) -> None:
        self._reconciliation.requested(now_ns)
        self._actions.append(action)

    def reconciled(self, gap_id: str | None, orders: Rows, trades: Rows, now_ns: int) -> None:
        """The REST rows a ``Reconcile`` fetched: what changed while blind is published, marked
        reconciled, then a ``reconciled`` lifecycle event with the counts."""
        events, detail = self._reconciliation.rows(gap_id, orders, trades)
        self._events += events
        self._emit(LifecycleKind.RECONCILED, now_ns, None, detail=detail)

    def reconcile_failed(self, gap_id: str | None, error: str, now_ns: int) -> None:
        """A ``Reconcile`` could not fetch its rows."""
        self._emit(LifecycleKind.RECONCILED, now_ns, error, detail=Reconciliation.failed(gap_id, error))

    def _emit(self, kind: LifecycleKind, now_ns: int, reason: str | None = None, gap: Gap | None = None,
              detail: Mapping[str, Scalar] | None = None) -> None:  # fmt: skip
        self._events.append(lifecycle_event(kind, now_ns, self.session_epoch, reason, gap, detail))


def _is_subscribe(frame: str) -> bool:
    """Subscribe verbs start with 's' (smd, smh, sor, str, spl, ssd, sld, sbd)."""
    return frame[:1] == "s" and frame[3:4] in ("+", "")
