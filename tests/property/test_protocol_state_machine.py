"""Any sequence of socket and auth trouble ends with exactly the desired set subscribed.

A model gateway tracks what the current socket has subscribed. Invariants checked
after every call into the protocol:

- no subscribe frame is ever written while the session is not usable;
- whenever the session is usable, the socket holds exactly the desired set;
- the session that recovers requests every desired subscription exactly once;
- gaps open and close in pairs, and none is open while usable unless a subscription is silent.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bridge.backoff import Backoff, BackoffPolicy
from bridge.events import AuthStatus, Event, Heartbeat, LifecycleKind, Quote, SystemLogin
from bridge.ingest.session import GatewaySession
from bridge.ingest.session_types import Reconnect, SessionSettings, SessionState
from bridge.ingest.subscriptions import Subscription

S = 1_000_000_000
POOL = (
    Subscription.market_data(265598, ["31", "84", "86"]),
    Subscription.market_data(265598, ["31", "84", "86", "7059"]),
    Subscription.market_data(272093, ["31"]),
    Subscription.orders(),
    Subscription.trades(days=1),
    Subscription.pnl(),
    Subscription.ledger("DU1"),
    Subscription.summary("DU1"),
)
KEY_OF_FRAME = {s.subscribe: s.key for s in POOL} | {s.unsubscribe: s.key for s in POOL}
SUBSCRIBE_FRAMES = {s.subscribe for s in POOL}
AUTHENTICATED = AuthStatus(authenticated=True, competing=False)


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        backoff = Backoff(BackoffPolicy(floor_s=0.5, cap_s=30.0, healthy_reset_s=20.0), random.Random(3))
        self.settings = SessionSettings(expected_cadence_s={"md": 40.0, "ld": 30.0})
        self.p = GatewaySession(self.settings, POOL[:1] + POOL[3:4], backoff=backoff)
        self.now = 0
        self.server: set[str] = set()  # what the current socket has subscribed
        self.gap_starts = 0
        self.gap_ends = 0
        self.epoch = 0
        self.recovered_frames: list[list[str]] = []

    # ----------------------------------------------------------------------- plumbing

    def drain(self) -> None:
        frames = self.p.frames_to_send()
        subscribing = [f for f in frames if f in SUBSCRIBE_FRAMES]
        assert not subscribing or self.p.usable, f"subscribed while {self.p.state}: {subscribing}"
        for frame in frames:
            key = KEY_OF_FRAME.get(frame)
            if key is None:
                continue
            if frame in SUBSCRIBE_FRAMES:
                self.server.add(key)
            else:
                self.server.discard(key)
        was_epoch = self.epoch
        for event in self.p.events_received():
            self.gap_starts += event.kind is LifecycleKind.GAP_START
            self.gap_ends += event.kind is LifecycleKind.GAP_END
            if event.kind is LifecycleKind.AUTHENTICATED:
                self.epoch += 1
        if self.epoch != was_epoch:
            self.recovered_frames.append(frames)
            counts = Counter(f for f in frames if f in SUBSCRIBE_FRAMES)
            assert counts == Counter(s.subscribe for s in self.p.desired())
        for action in self.p.actions_to_perform():
            if isinstance(action, Reconnect):
                self.p.connection_lost(action.reason, self.now)
                self.server.clear()
                self.drain()

    def feed(self, *events: Event) -> None:
        self.p.apply_events(events, self.now)
        self.drain()

    def socket_open(self) -> bool:
        return self.p.state is not SessionState.DISCONNECTED

    # ----------------------------------------------------------------------- rules

    @rule()
    def open(self) -> None:
        if self.socket_open():
            return
        self.now = max(self.now, self.p.reconnect_at_ns or 0)
        self.p.connection_opened(self.now, "sess")
        self.server.clear()
        self.drain()
        self.feed(SystemLogin(username="u1"))

    @precondition(lambda self: self.socket_open())
    @rule(abort=st.booleans())
    def drop(self, abort: bool) -> None:
        self.p.connection_lost("abort" if abort else "closed 1000", self.now)
        self.server.clear()
        self.drain()

    @precondition(lambda self: self.socket_open())
    @rule()
    def stall(self) -> None:
        self.now += int((self.settings.stale_after_s + 1) * S)
        self.p.tick(self.now)
        self.drain()
        assert not self.socket_open()

    @precondition(lambda self: self.socket_open())
    @rule()
    def auth_loss(self) -> None:
        self.feed(AuthStatus(authenticated=False), AuthStatus(competing=False), AuthStatus(message=""))

    @precondition(lambda self: self.socket_open())
    @rule()
    def competing(self) -> None:
        self.feed(AuthStatus(authenticated=False, competing=True, fail="Competing session"))

    @rule(over_rest=st.booleans())
    def recover(self, over_rest: bool) -> None:
        if self.p.state is SessionState.UNAUTHENTICATED and over_rest:
            self.p.auth_status_polled(authenticated=True, competing=False, now_ns=self.now)
            self.drain()
        if not self.socket_open():
            self.open()
        epoch, was_usable = self.epoch, self.p.usable
        self.feed(AuthStatus(authenticated=True, competing=False))
        assert self.p.usable
        assert self.epoch == (epoch if was_usable else epoch + 1)

    @rule(sub=st.sampled_from(POOL))
    def subscribe(self, sub: Subscription) -> None:
        self.p.subscribe(sub, self.now)
        self.drain()

    @rule(sub=st.sampled_from(POOL))
    def unsubscribe(self, sub: Subscription) -> None:
        self.p.unsubscribe(sub.key, self.now)
        self.drain()

    @rule(seconds=st.integers(min_value=0, max_value=60), heartbeat=st.booleans(), data=st.booleans())
    def time_passes(self, seconds: int, heartbeat: bool, data: bool) -> None:
        for _ in range(seconds):
            self.now += S
            if self.socket_open() and heartbeat:
                events: list[Event] = [Heartbeat(hb_ms=self.now // 1_000_000)]
                if data and self.p.usable:
                    events.append(_quote(265598))
                self.feed(*events)
            self.p.tick(self.now)
            self.drain()

    # ----------------------------------------------------------------------- invariants

    @invariant()
    def usable_socket_holds_exactly_the_desired_set(self) -> None:
        if self.p.usable:
            assert self.server == {s.key for s in self.p.desired()}
            assert self.p.live_keys() == {s.key for s in self.p.desired()}

    @invariant()
    def gaps_open_and_close_in_pairs(self) -> None:
        assert self.gap_starts - self.gap_ends == (1 if self.p.gap_open else 0)
        # While usable, a gap is open only as long as a subscription stays silent.
        assert not (self.p.usable and self.p.gap_open) or self.p.stale_keys()
        assert not (self.p.usable and self.p.stale_keys()) or self.p.gap_open

    @invariant()
    def epoch_counts_usable_sessions(self) -> None:
        assert self.p.session_epoch == self.epoch


def _quote(conid: int) -> Quote:
    return Quote(
        conid=conid, conid_ex=None, updated_ms=1, server_id=None, snapshot=False, changed=(), values={}
    )


ProtocolMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestProtocolStateMachine = ProtocolMachine.TestCase
