from __future__ import annotations

import random

import orjson

from bridge.backoff import Backoff, BackoffPolicy
from bridge.events import (
    AuthStatus,
    Bars,
    Control,
    ControlKind,
    Event,
    Heartbeat,
    Lifecycle,
    LifecycleKind,
    Order,
    Quote,
    SystemLogin,
)
from bridge.ingest.session import GatewaySession
from bridge.ingest.session_types import (
    PollAuthStatus,
    Reauthenticate,
    Reconcile,
    Reconnect,
    SessionSettings,
    SessionState,
    TickleRest,
)
from bridge.ingest.subscriptions import HistoryRequest, Subscription

S = 1_000_000_000
AAPL = Subscription.market_data(265598, ["31", "84", "86"])
MSFT = Subscription.market_data(272093, ["31"])
ORDERS = Subscription.orders()
TRADES = Subscription.trades(days=1)
AUTHENTICATED = AuthStatus(authenticated=True, competing=False, connected=True)


def make(*subs: Subscription, **settings: object) -> GatewaySession:
    backoff = Backoff(BackoffPolicy.no_delay(), random.Random(0))
    return GatewaySession(SessionSettings(**settings), subs, backoff=backoff)  # type: ignore[arg-type]


def quote(conid: int) -> Quote:
    return Quote(
        conid=conid,
        conid_ex=str(conid),
        updated_ms=1,
        server_id="q1",
        snapshot=False,
        changed=("31",),
        values={"31": "1.0"},
    )


def smd(conid: int, updated_ms: int, last: str = "1.0") -> bytes:
    return orjson.dumps({"topic": f"smd+{conid}", "conid": conid, "_updated": updated_ms, "31": last})


def quotes_of(p: GatewaySession) -> list[Quote]:
    return [e for e in p.events_received() if isinstance(e, Quote)]


def drain(p: GatewaySession) -> tuple[list[str], list[Lifecycle], list[object]]:
    events = [e for e in p.events_received() if isinstance(e, Lifecycle)]
    return p.frames_to_send(), events, list(p.actions_to_perform())


def kinds(events: list[Lifecycle]) -> list[LifecycleKind]:
    return [e.kind for e in events]


def subscribes(frames: list[str]) -> list[str]:
    return [f for f in frames if f[:1] == "s" and f[3:4] in ("+", "")]


def open_and_auth(p: GatewaySession, now_ns: int = 0, *events: Event) -> list[str]:
    p.connection_opened(now_ns, session_id="sess-1")
    p.apply_events(events or (AUTHENTICATED,), now_ns)
    frames, _, _ = drain(p)
    return frames


def test_sends_the_session_message_on_open_and_nothing_else_until_authenticated() -> None:
    p = make(AAPL, ORDERS, send_session_message=True)
    p.connection_opened(0, session_id="sess-1")
    p.apply_events([SystemLogin(username="u1")], 0)
    assert p.frames_to_send() == ['{"session":"sess-1"}']
    assert p.state is SessionState.CONNECTED


def test_sts_authenticated_replays_every_desired_subscription_once() -> None:
    p = make(AAPL, ORDERS, TRADES)
    frames = open_and_auth(p)
    assert subscribes(frames) == [AAPL.subscribe, ORDERS.subscribe, TRADES.subscribe]
    assert p.usable and p.session_epoch == 1


def test_system_login_and_first_heartbeat_count_as_authenticated_when_no_sts_comes() -> None:
    p = make(AAPL)
    frames = open_and_auth(p, 0, SystemLogin(username="u1"), Heartbeat(hb_ms=1))
    assert subscribes(frames) == [AAPL.subscribe]


def test_a_heartbeat_without_a_login_does_not_authenticate() -> None:
    p = make(AAPL)
    frames = open_and_auth(p, 0, Heartbeat(hb_ms=1))
    assert subscribes(frames) == []
    assert not p.usable


def test_sts_keys_absent_are_not_false() -> None:
    p = make(AAPL)
    open_and_auth(p)
    p.apply_events([AuthStatus(competing=False), AuthStatus(message="")], 1 * S)
    assert p.usable


def test_the_first_frame_of_each_target_after_a_connect_is_a_snapshot() -> None:
    p = make(AAPL, MSFT)
    open_and_auth(p, 0)
    p.receive_frames([smd(265598, 1), smd(272093, 1), smd(265598, 2, "1.1")], S)
    assert [(q.conid, q.snapshot) for q in quotes_of(p)] == [(265598, True), (272093, True), (265598, False)]

def test_auth_loss_opens_a_gap_polls_status_and_sends_no_subscriptions() -> None:
    p = make(AAPL, reauthenticate=True)
    open_and_auth(p, 0)
    p.apply_events([AuthStatus(authenticated=False, fail="maintenance")], 5 * S)
    frames, events, actions = drain(p)
    assert subscribes(frames) == []
    assert kinds(events) == [LifecycleKind.UNAUTHENTICATED, LifecycleKind.GAP_START]
    gap = events[1]
    assert gap.gap_started_ms == 5000 and gap.reason and "maintenance" in gap.reason
    assert PollAuthStatus() in actions and Reauthenticate() in actions
    p.subscribe(MSFT, 6 * S)
    assert subscribes(p.frames_to_send()) == []


def test_recovery_on_the_same_socket_resubscribes_closes_the_gap_and_requests_reconcile() -> None:
    p = make(AAPL, ORDERS)
    open_and_auth(p, 0)
    p.apply_events([AuthStatus(authenticated=False)], 5 * S)
    drain(p)
    p.apply_events([AUTHENTICATED], 9 * S)
    frames, events, actions = drain(p)
    assert subscribes(frames) == [AAPL.subscribe, ORDERS.subscribe]
    assert kinds(events) == [LifecycleKind.AUTHENTICATED, LifecycleKind.RESUBSCRIBED, LifecycleKind.GAP_END]
    gap_end = events[-1]
    assert gap_end.gap_started_ms == 5000 and gap_end.at_ms == 9000
    assert Reconcile(gap_end.gap_id, 5000) in actions
    assert p.session_epoch == 2
    assert [e.session_epoch for e in events] == [2, 2, 2]  # a typed field, not a detail entry
    assert not any("session_epoch" in e.detail for e in events)


def test_a_competing_session_is_unusable_even_if_authenticated_is_true() -> None:
    p = make(AAPL)
    open_and_auth(p, 0)
    p.apply_events([AuthStatus(authenticated=True, competing=True, fail="Competing session")], S)
    _, events, _ = drain(p)
    assert kinds(events) == [LifecycleKind.COMPETING, LifecycleKind.UNAUTHENTICATED, LifecycleKind.GAP_START]
    assert events[0].reason == "Competing session"
    assert not p.usable


def test_rest_reporting_authenticated_again_replaces_the_socket() -> None:
    p = make(AAPL)
    open_and_auth(p, 0)
    p.apply_events([AuthStatus(authenticated=False)], S)
    drain(p)
    p.auth_status_polled(authenticated=True, competing=False, now_ns=3 * S)
    assert [a for a in p.actions_to_perform() if isinstance(a, Reconnect)]


def test_unsubscribing_while_unauthenticated_is_sent_before_the_replay() -> None:
    p = make(AAPL, MSFT)
    open_and_auth(p, 0)
    p.apply_events([AuthStatus(authenticated=False)], S)
    drain(p)
    p.unsubscribe(MSFT.key, 2 * S)
    assert p.frames_to_send() == []
    p.apply_events([AUTHENTICATED], 3 * S)
    frames = p.frames_to_send()
    assert frames == [MSFT.unsubscribe, AAPL.subscribe]


def test_disconnect_opens_one_gap_and_the_next_session_closes_it() -> None:
    p = make(AAPL)
    open_and_auth(p, 0)
    p.connection_lost("closed 1000", 2 * S)
    _, events, _ = drain(p)
    assert kinds(events) == [LifecycleKind.DISCONNECTED, LifecycleKind.GAP_START]
    p.connect_failed("refused", 3 * S)
    p.connection_opened(4 * S, "s")
    p.connection_lost("closed 1000", 4 * S)
    _, events, _ = drain(p)
    assert LifecycleKind.GAP_START not in kinds(events)
    frames = open_and_auth(p, 5 * S)
    _, events, _ = drain(p)
    assert subscribes(frames) == [AAPL.subscribe]
    assert p.session_epoch == 2
    assert not p.gap_open


def test_no_gap_before_the_first_usable_session_but_reconcile_on_start() -> None:
    p = make(ORDERS)
    p.connection_opened(0, "s")
    p.connection_lost("closed", S)
    _, events, _ = drain(p)
    assert LifecycleKind.GAP_START not in kinds(events)
    p.connection_opened(2 * S, "s")
    p.apply_events([AUTHENTICATED], 2 * S)
    assert Reconcile(None, None) in p.actions_to_perform()


def test_frames_queued_before_a_drop_are_discarded() -> None:
    p = make(AAPL)
    p.connection_opened(0, "s")
    p.apply_events([AUTHENTICATED], 0)
    p.connection_lost("abort", S)
    assert p.frames_to_send() == []


def test_sends_tic_every_interval_and_asks_for_a_rest_tickle() -> None:
    p = make(tic_interval_s=30, tickle_interval_s=60, stale_after_s=1000)
    open_and_auth(p, 0)
    assert p.next_deadline() == 30 * S
    p.tick(30 * S)
    assert p.frames_to_send() == ["tic"]
    p.tick(60 * S)
    frames, _, actions = drain(p)
    assert frames == ["tic"] and TickleRest() in actions


def test_a_silent_socket_is_reconnected_once() -> None:
    p = make(AAPL, stale_after_s=25)
    open_and_auth(p, 0)
    p.apply_events([Heartbeat(hb_ms=1)], 10 * S)
    p.tick(34 * S)
    assert not [a for a in p.actions_to_perform() if isinstance(a, Reconnect)]
    assert p.next_deadline() is not None and p.next_deadline() <= 35 * S  # type: ignore[operator]
    p.tick(35 * S)
    p.tick(36 * S)
    reconnects = [a for a in p.actions_to_perform() if isinstance(a, Reconnect)]
    assert len(reconnects) == 1 and reconnects[0].reason.startswith("stale")


def test_a_socket_that_never_authenticates_is_reconnected() -> None:
    p = make(auth_timeout_s=20, stale_after_s=1000)
    p.connection_opened(0, "s")
    p.apply_events([Heartbeat(hb_ms=1)], 19 * S)
    p.tick(20 * S)
    assert [a for a in p.actions_to_perform() if isinstance(a, Reconnect)]


def test_smd_is_refreshed_before_expiry_without_a_gap() -> None:
    p = make(AAPL, smd_refresh_s=540, stale_after_s=1000, tic_interval_s=1000, tickle_interval_s=1000)
    open_and_auth(p, 0)
    for t in range(1, 541):
        p.receive_frames([smd(265598, t, f"{t}.0")], t * S)
        p.tick(t * S)
    quotes = quotes_of(p)
    assert [q.snapshot for q in quotes] == [True] + [False] * 539
    frames, events, _ = drain(p)
    assert frames == [AAPL.subscribe]
    assert LifecycleKind.GAP_START not in kinds(events)
    p.receive_frames([smd(265598, 541, "541.0")], 541 * S)
    assert [q.snapshot for q in quotes_of(p)] == [True]  # the refreshed smd's first frame


def test_a_batch_of_quotes_keeps_each_conids_subscription_fresh_and_no_other() -> None:
    p = make(AAPL, MSFT, expected_cadence_s={"md": 60.0}, stale_after_s=1000, tic_interval_s=1000)
    open_and_auth(p, 0)
    p.receive_frames([smd(265598, 1), smd(265598, 2, "1.1"), smd(999, 1)], 50 * S)
    p.tick(60 * S)
    frames, events, _ = drain(p)
    assert frames == [MSFT.subscribe]
    assert [e.detail["subscription"] for e in events if e.kind is LifecycleKind.STALE] == [MSFT.key]
    p.tick(110 * S)
    frames, events, _ = drain(p)
    assert frames == [AAPL.subscribe]
    assert [e.detail["subscription"] for e in events if e.kind is LifecycleKind.STALE] == [AAPL.key]


def test_a_batch_of_quotes_counts_as_frames_for_the_stale_socket_check() -> None:
    p = make(AAPL, stale_after_s=100, tic_interval_s=1000, tickle_interval_s=1000)
    open_and_auth(p, 0)
    p.receive_frames([smd(999, 1)], 90 * S)
    p.tick(150 * S)
    _, _, actions = drain(p)
    assert not any(isinstance(a, Reconnect) for a in actions)
    p.tick(191 * S)
    _, _, actions = drain(p)
    assert any(isinstance(a, Reconnect) for a in actions)


def test_a_silent_subscription_is_resubscribed_and_reported_stale_once() -> None:
    p = make(AAPL, ORDERS, expected_cadence_s={"md": 60.0}, stale_after_s=1000, tic_interval_s=1000)
    open_and_auth(p, 0)
    p.tick(60 * S)
    frames, events, _ = drain(p)
    assert frames == [AAPL.subscribe]
    assert kinds(events) == [LifecycleKind.STALE, LifecycleKind.GAP_START]
    assert events[0].detail["subscription"] == AAPL.key
    p.tick(120 * S)
    frames, events, _ = drain(p)
    assert frames == [AAPL.subscribe] and events == []
    p.apply_events([quote(265598)], 121 * S)
    assert kinds(drain(p)[1]) == [LifecycleKind.GAP_END]
    p.tick(181 * S)
    _, events, _ = drain(p)
    assert kinds(events) == [LifecycleKind.STALE, LifecycleKind.GAP_START]


def test_a_silent_subscription_opens_a_gap_that_its_data_closes_and_reconciles() -> None:
    p = make(AAPL, MSFT, expected_cadence_s={"md": 60.0}, stale_after_s=1000, tic_interval_s=1000,
             tickle_interval_s=1000)  # fmt: skip
    open_and_auth(p, 0)
    drain(p)
    p.receive_frames([smd(265598, 1)], 30 * S)  # a run of quotes: the reader's hot path
    p.tick(60 * S)
    _, events, _ = drain(p)
    assert kinds(events) == [LifecycleKind.STALE, LifecycleKind.GAP_START]
    gap = events[1]
    assert gap.reason is not None and gap.reason.startswith(f"silent: {MSFT.key}")
    assert p.gap_open and p.stale_keys() == {MSFT.key}
    p.tick(90 * S)  # AAPL silent too: the same gap stays open
    _, events, _ = drain(p)
    assert kinds(events) == [LifecycleKind.STALE] and p.stale_keys() == {MSFT.key, AAPL.key}
    p.receive_frames([smd(265598, 2)], 91 * S)
    assert drain(p)[1] == [] and p.gap_open  # MSFT is still silent
    p.apply_events([quote(272093)], 92 * S)  # any event proving it alive
    _, events, actions = drain(p)
    assert kinds(events) == [LifecycleKind.GAP_END] and events[0].gap_id == gap.gap_id
    assert Reconcile(gap.gap_id, gap.gap_started_ms) in actions
    assert not p.gap_open and p.stale_keys() == frozenset()


def test_unsubscribing_the_last_silent_subscription_closes_its_gap() -> None:
    p = make(AAPL, ORDERS, expected_cadence_s={"md": 60.0}, stale_after_s=1000, tic_interval_s=1000)
    open_and_auth(p, 0)
    p.tick(60 * S)
    drain(p)
    assert p.unsubscribe(AAPL.key, 61 * S)
    assert kinds(drain(p)[1]) == [LifecycleKind.GAP_END]


def test_a_silence_gap_open_at_a_disconnect_closes_with_the_recovery() -> None:
    p = make(AAPL, expected_cadence_s={"md": 60.0}, stale_after_s=1000, tic_interval_s=1000)
    open_and_auth(p, 0)
    p.tick(60 * S)
    drain(p)
    p.connection_lost("closed 1000", 61 * S)
    assert LifecycleKind.GAP_START not in kinds(drain(p)[1])  # the first cause is kept
    open_and_auth(p, 62 * S)
    assert not p.gap_open and p.stale_keys() == frozenset()


def test_data_keeps_a_subscription_fresh_and_event_driven_topics_are_never_stale() -> None:
    p = make(AAPL, ORDERS, expected_cadence_s={"md": 60.0}, stale_after_s=1000)
    open_and_auth(p, 0)
    for t in range(10, 600, 10):
        p.apply_events(
            [quote(265598), Order(account="U1", order_id=1, changed=(), reconciled=False)], t * S
        )
        p.tick(t * S)
    _, events, _ = drain(p)
    assert LifecycleKind.STALE not in kinds(events)


def test_a_stale_non_market_data_topic_is_unsubscribed_then_subscribed() -> None:
    p = make(ORDERS, expected_cadence_s={"or": 30.0}, stale_after_s=1000, tic_interval_s=1000)
    open_and_auth(p, 0)
    p.tick(30 * S)
    assert p.frames_to_send() == [ORDERS.unsubscribe, ORDERS.subscribe]


def test_historical_requests_hold_at_most_five_slots_and_are_released_with_umh() -> None:
    p = make()
    open_and_auth(p, 0)
    for conid in range(1, 8):
        p.request_history(HistoryRequest.bars(conid, {"period": "1d", "bar": "1h"}), 0)
    assert [f.split("+")[1] for f in p.frames_to_send()] == ["1", "2", "3", "4", "5"]
    assert p.history_in_flight() == 5
    bars = Bars(
        conid=2,
        server_id="900",
        symbol=None,
        text=None,
        price_factor=None,
        start_time=None,
        time_period=None,
        bar_length_s=None,
        md_availability=None,
        high=None,
        low=None,
        bars=(),
    )
    p.apply_events([bars], S)
    frames = p.frames_to_send()
    assert frames[0] == "umh+900" and frames[1].startswith("smh+6+")
    assert p.history_in_flight() == 5


def test_historical_requests_in_flight_at_a_drop_are_sent_again_on_the_next_session() -> None:
    p = make()
    open_and_auth(p, 0)
    p.request_history(HistoryRequest.bars(1), 0)
    p.connection_lost("abort", S)
    frames = open_and_auth(p, 2 * S)
    assert [f for f in frames if f.startswith("smh+")] == ["smh+1+{}"]


def test_by_default_the_session_message_waits_for_the_gateway_to_ask_for_it() -> None:
    p = make()
    p.connection_opened(0, "sess-9")
    assert p.frames_to_send() == []


def test_waiting_for_session_resends_the_session_message_once() -> None:
    p = make()
    p.connection_opened(0, "sess-9")
    p.frames_to_send()
    waiting = Control(kind=ControlKind.WAITING_FOR_SESSION, topic=None, text="waiting for session")
    p.apply_events([waiting, waiting], S)
    assert p.frames_to_send() == ['{"session":"sess-9"}']


def test_runtime_subscribe_sends_at_once_when_usable_and_replacing_md_resends_smd() -> None:
    p = make(AAPL)
    open_and_auth(p, 0)
    wider = Subscription.market_data(265598, ["31", "84", "86", "7059"])
    p.subscribe(wider, S)
    p.subscribe(ORDERS, S)
    p.subscribe(ORDERS, S)
    assert p.frames_to_send() == [wider.subscribe, ORDERS.subscribe]
    assert p.unsubscribe(ORDERS.key, 2 * S)
    assert not p.unsubscribe(ORDERS.key, 2 * S)
    assert p.frames_to_send() == [ORDERS.unsubscribe]


def test_reconnect_waits_for_the_backoff_delay() -> None:
    backoff = Backoff(BackoffPolicy(floor_s=2.0, cap_s=30.0), random.Random(0))
    p = GatewaySession(SessionSettings(), (AAPL,), backoff=backoff)
    p.connection_opened(0, "s")
    p.connection_lost("closed", 10 * S)
    assert p.reconnect_at_ns == 12 * S
    assert p.next_deadline() == 12 * S
    p.connect_failed("refused", 12 * S)
    assert p.reconnect_at_ns is not None and 14 * S <= p.reconnect_at_ns <= 16 * S


def test_reconciled_rows_are_published_then_the_outcome_as_a_lifecycle_event() -> None:
    p = make()
    order_row = {"acct": "U1", "orderId": 7, "status": "Submitted", "ticker": "AAPL"}
    p.reconciled("g1", [order_row, order_row], [], S)
    order, event = p.events_received()
    assert isinstance(order, Order) and order.reconciled and order.order_id == 7
    assert isinstance(event, Lifecycle) and event.kind is LifecycleKind.RECONCILED
    assert event.detail["orders"] == 1 and event.detail["executions"] == 0 and event.detail["gap_id"] == "g1"


def test_a_failed_reconcile_is_published_as_a_lifecycle_event_with_the_error() -> None:
    p = make()
    p.reconcile_failed(None, "gateway unavailable", S)
    (event,) = p.events_received()
    assert isinstance(event, Lifecycle) and event.kind is LifecycleKind.RECONCILED
    assert event.reason == "gateway unavailable" and event.detail["error"] == "gateway unavailable"
    assert "gap_id" not in event.detail


def test_replacing_a_silent_subscription_keeps_it_stale_and_its_gap_open_until_data_comes() -> None:
    p = make(AAPL, expected_cadence_s={"md": 60.0}, stale_after_s=1000, tic_interval_s=1000)
    open_and_auth(p, 0)
    p.tick(60 * S)
    drain(p)
    p.subscribe(Subscription.market_data(265598, ["31", "84"]), 61 * S)  # new fields, same key
    assert p.gap_open and p.stale_keys() == {AAPL.key}
    p.apply_events([quote(265598)], 62 * S)
    assert kinds(drain(p)[1]) == [LifecycleKind.GAP_END] and not p.gap_open
