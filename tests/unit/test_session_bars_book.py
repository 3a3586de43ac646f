"""The session's bars subscriptions (5 slots, umh, streaming or one-shot), combos and book ladders."""

from __future__ import annotations

import random

import orjson
import pytest

from bridge.backoff import Backoff, BackoffPolicy
from bridge.errors import SubscriptionRefused
from bridge.events import AuthStatus, Bars, Lifecycle
from bridge.ingest.session import GatewaySession
from bridge.ingest.session_types import SessionSettings
from bridge.ingest.subscriptions import HistoryRequest, Subscription

S = 1_000_000_000
AUTHENTICATED = AuthStatus(authenticated=True, competing=False, connected=True)
LOST = AuthStatus(authenticated=False, competing=False, connected=True)


def bars_sub(conid: int, bar: str = "1min", stream: bool = True) -> Subscription:
    return Subscription.bars(conid, {"period": "1d", "bar": bar, "source": "trades"}, stream)


def answer(conid: int, server_id: str, tick_num: int | None = None) -> Bars:
    return Bars(conid=conid, server_id=server_id, symbol=None, text=None, price_factor=None, start_time=None,
                time_period=None, bar_length_s=None, md_availability=None, high=None, low=None, bars=(),
                partial=tick_num is not None, tick_num=tick_num)  # fmt: skip


def make(*subs: Subscription, **kwargs: object) -> GatewaySession:
    backoff = Backoff(BackoffPolicy.no_delay(), random.Random(0))
    return GatewaySession(SessionSettings(), subs, backoff=backoff, **kwargs)  # type: ignore[arg-type]


def usable(p: GatewaySession, now_ns: int = 0) -> list[str]:
    p.connection_opened(now_ns, session_id="sess-1")
    p.apply_events([AUTHENTICATED], now_ns)
    return p.frames_to_send()


def smh(frames: list[str]) -> list[str]:
    return [f for f in frames if f.startswith(("smh+", "umh+"))]


def test_configured_bars_are_requested_when_the_session_becomes_usable() -> None:
    p = make(bars_sub(265598))
    assert smh(usable(p)) == ['smh+265598+{"period":"1d","bar":"1min","source":"trades"}']


def test_a_streaming_subscription_stays_open_for_its_updates_and_is_released_with_umh_on_unsubscribe() -> None:
    sub = bars_sub(265598)
    p = make(sub)
    usable(p)
    p.apply_events([answer(265598, "4379500"), answer(265598, "4379500", tick_num=1)], S)
    assert p.frames_to_send() == []
    assert p.unsubscribe(sub.key, 2 * S)
    assert p.frames_to_send() == ["umh+4379500"]


def test_a_one_shot_subscription_is_released_right_after_its_first_answer() -> None:
    p = make(bars_sub(265598, stream=False))
    usable(p)
    p.apply_events([answer(265598, "77")], S)
    assert p.frames_to_send() == ["umh+77"]


def test_unsubscribing_before_the_answer_releases_the_answer_when_it_comes() -> None:
    sub = bars_sub(265598)
    p = make(sub)
    usable(p)
    p.unsubscribe(sub.key, S)
    assert p.frames_to_send() == []
    p.apply_events([answer(265598, "55")], 2 * S)
    assert p.frames_to_send() == ["umh+55"]


def test_a_sixth_bars_subscription_is_refused_with_a_clear_error() -> None:
    p = make(*(bars_sub(conid) for conid in range(1, 6)))
    with pytest.raises(SubscriptionRefused, match="at most 5 historical-bars requests"):
        p.subscribe(bars_sub(6), 0)
    p.subscribe(bars_sub(5), 0)  # the same subscription again is not a sixth
    assert len(p.desired()) == 5


def test_two_subscriptions_on_one_conid_are_answered_in_order_and_released_by_their_own_server_id() -> None:
    minute, hour = bars_sub(265598, "1min"), bars_sub(265598, "1h", stream=False)
    p = make(minute, hour)
    usable(p)
    p.apply_events([answer(265598, "1"), answer(265598, "2")], S)
    assert p.frames_to_send() == ["umh+2"]  # the one-shot; the stream stays open
    p.unsubscribe(minute.key, 2 * S)
    assert p.frames_to_send() == ["umh+1"]


def test_open_streams_and_one_shots_share_the_gateway_five_slots() -> None:
    p = make(*(bars_sub(conid) for conid in range(1, 5)))
    usable(p)
    p.apply_events([answer(conid, str(conid)) for conid in range(1, 5)], S)
    for conid in (10, 11):
        p.request_history(HistoryRequest.bars(conid), S)
    assert smh(p.frames_to_send()) == ["smh+10+{}"]  # one slot left
    p.apply_events([answer(10, "10")], 2 * S)
    assert p.frames_to_send() == ["umh+10", "smh+11+{}"]


def test_bars_subscriptions_are_requested_again_after_a_reconnect() -> None:
    sub = bars_sub(265598)
    p = make(sub)
    usable(p)
    p.apply_events([answer(265598, "1")], S)
    p.connection_lost("closed", 2 * S)
    assert smh(usable(p, 3 * S)) == [sub.subscribe]


def test_after_an_auth_loss_on_the_same_socket_open_streams_are_released_before_they_are_requested_again() -> None:
    sub = bars_sub(265598)
    p = make(sub)
    usable(p)
    p.apply_events([answer(265598, "1")], S)
    p.apply_events([LOST], 2 * S)
    p.frames_to_send()
    p.apply_events([AUTHENTICATED], 3 * S)
    assert smh(p.frames_to_send()) == ["umh+1", sub.subscribe]


# ------------------------------------------------------------------------------------------- combos


def combo_frame(target: str, updated_ms: int) -> bytes:
    return orjson.dumps({"topic": f"smd+{target}", "conidEx": target, "conid": 28812380, "_updated": updated_ms,
                         "31": f"{updated_ms}.0"})  # fmt: skip


def test_two_combos_on_one_spread_conid_are_each_kept_alive_by_their_own_quotes() -> None:
    first = Subscription.market_target("28812380;;;265598/1,8314/-1", ["31"])
    second = Subscription.market_target("28812380;;;265598/1,8314/+2", ["31"])
    p = GatewaySession(SessionSettings(expected_cadence_s={"md": 10.0}, stale_after_s=1000, tic_interval_s=1000,
                                       tickle_interval_s=1000), (first, second))  # fmt: skip
    usable(p)
    p.events_received()
    for now in range(5, 40, 5):
        p.receive_frames([combo_frame(first.key[3:], now), combo_frame(second.key[3:], now)], now * S)
        p.tick(now * S)
    assert [e for e in p.events_received() if isinstance(e, Lifecycle)] == []
    assert p.frames_to_send() == []


def test_a_combo_target_subscribes_verbatim() -> None:
    sub = Subscription.market_target("28812380;;;265598/1,8314/-1", ["31"])
    assert (sub.key, sub.subscribe) == ("md:28812380;;;265598/1,8314/-1",
                                        'smd+28812380;;;265598/1,8314/-1+{"fields":["31"]}')  # fmt: skip


# ------------------------------------------------------------------------------------------- book


def test_a_book_without_account_subscribes_once_the_gateway_names_its_selected_account() -> None:
    p = make(books_without_account=[(265598, "NSE")])
    p.account_listed("DU1234567", 0)
    assert usable(p) == ["sbd+DU1234567+265598+NSE"]
    assert p.default_account == "DU1234567"


def test_a_second_ladder_for_the_same_account_replaces_the_first() -> None:
    first, second = Subscription.book("DU1", 265598), Subscription.book("DU1", 8314, "NYSE")
    p = make(first)
    usable(p)
    assert p.subscribe(second, S) == first
    assert p.frames_to_send() == ["ubd+DU1", "sbd+DU1+8314+NYSE"]
    assert [s.key for s in p.desired()] == ["bd:DU1"]


def test_an_unanswered_bars_subscription_is_asked_again_after_the_timeout_and_a_late_answer_is_released() -> None:
    sub = bars_sub(265598)
    p = GatewaySession(SessionSettings(smh_timeout_s=30, stale_after_s=1000, tic_interval_s=1000,
                                       tickle_interval_s=1000), (sub,))  # fmt: skip
    assert smh(usable(p)) == [sub.subscribe]
    p.tick(30 * S)
    assert smh(p.frames_to_send()) == [sub.subscribe]
    p.apply_events([answer(265598, "1"), answer(265598, "2")], 31 * S)  # the late one, then the retry's
    assert p.frames_to_send() == ["umh+2"]  # one stream is kept open, the other released


def test_a_one_shot_bars_subscription_is_asked_again_after_the_timeout_too() -> None:
    sub = bars_sub(265598, stream=False)
    p = GatewaySession(SessionSettings(smh_timeout_s=30, stale_after_s=1000, tic_interval_s=1000,
                                       tickle_interval_s=1000), (sub,))  # fmt: skip
    usable(p)
    p.tick(30 * S)
    assert smh(p.frames_to_send()) == [sub.subscribe]
    p.unsubscribe(sub.key, 31 * S)
    p.tick(61 * S)
    assert smh(p.frames_to_send()) == []  # no longer desired: not asked again
