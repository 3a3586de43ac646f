"""Historical bars as the live gateway sends them, and combo quotes keyed and identified by their target."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from bridge.codec import EnvelopeContext, encode
from bridge.events import Bars, DeadLetter, Quote
from bridge.ingest import wire
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.routing import Router

SESSIONS = Path(__file__).parents[1] / "data" / "sessions"
LIVE_FRAMES = (SESSIONS / "bars_live.jsonl").read_bytes().splitlines()  # three live frames, then the documented one
NOW_NS = 1_777_000_000_000_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def normalized(frame: bytes, normalizer: Normalizer | None = None) -> Bars:
    (event,) = (normalizer or Normalizer()).normalize(frame, NOW_NS)
    assert isinstance(event, Bars), event
    return event


def test_live_bars_without_t_start_at_start_time_plus_i_bar_lengths_read_as_utc() -> None:
    bars = normalized(LIVE_FRAMES[0])
    assert [iso(bar.time_ms) for bar in bars.bars] == ["2024-03-01T18:21:00+00:00", "2024-03-01T18:22:00+00:00"]
    assert (bars.start_time, bars.time_zone, bars.bar_times, bars.points) == ("20240301-18:21:00", "UTC", "derived", 1)
    assert [(b.open, b.high, b.low, b.close, b.volume) for b in bars.bars] == [
        (25.87, 25.93, 25.82, 25.92, 197.09), (25.93, 25.94, 25.86, 25.86, 62.18)]


def test_the_high_low_summary_is_decoded_and_points_at_the_bar_it_summarises() -> None:
    bars = normalized(LIVE_FRAMES[0])
    assert bars.high is not None and bars.low is not None
    assert (bars.high.price, bars.high.volume, bars.high.minutes_from_start) == (25.94, 62.18, 1)
    assert (bars.low.price, bars.low.volume, bars.low.minutes_from_start) == (25.82, 197.09, 0)
    assert bars.bars[1].high == bars.high.price and bars.bars[0].low == bars.low.price


def test_the_start_time_zone_is_a_setting() -> None:
    bars = normalized(LIVE_FRAMES[0], Normalizer(bars_time_zone=ZoneInfo("America/New_York")))
    assert iso(bars.bars[0].time_ms) == "2024-03-01T23:21:00+00:00"
    assert bars.time_zone == "America/New_York" and bars.start_time == "20240301-18:21:00"


@pytest.mark.parametrize(("line", "tick_num", "data"), [(1, 1, [{"o": 25.89, "c": 1.111}]), (2, 4, [{"o": 0.01}])])
def test_tick_num_frames_are_partial_updates_with_the_values_exactly_as_sent(
    line: int, tick_num: int, data: list[dict[str, float]]
) -> None:
    bars = normalized(LIVE_FRAMES[line])
    assert (bars.partial, bars.tick_num, bars.server_id, bars.conid, bars.points) == (True, tick_num, "4379500",
                                                                                      474219659, 0)  # fmt: skip
    assert list(bars.partial_data) == data and bars.bars == ()


def test_no_live_frame_becomes_a_dead_letter() -> None:
    normalizer = Normalizer()
    for frame in LIVE_FRAMES:
        assert not any(isinstance(e, DeadLetter) for e in normalizer.normalize(frame, NOW_NS))


def test_the_documentation_shape_keeps_its_own_bar_times() -> None:
    bars = normalized(LIVE_FRAMES[3])
    assert [bar.time_ms for bar in bars.bars] == [1698796800000] and bars.bar_times == "sent"
    assert not bars.partial


def test_a_bar_without_t_and_nothing_to_derive_its_time_from_is_a_dead_letter_naming_why() -> None:
    (event,) = Normalizer().normalize(b'{"topic":"smh+265598","data":[{"o":1}]}', NOW_NS)
    assert isinstance(event, DeadLetter) and "no startTime and barLength" in (event.error or "")


# ------------------------------------------------------------------------------------------- combos


def combo_frame(target: str, updated_ms: int, last: str, topic: str | None = None) -> bytes:
    return orjson.dumps({"topic": f"smd+{topic or target}", "conidEx": target, "conid": 28812380,
                         "_updated": updated_ms, "server_id": "q7", "31": last})  # fmt: skip


def encoded(frames: list[bytes]) -> list[tuple[str, str, bytes]]:
    normalizer, router, ctx = Normalizer(), Router(), EnvelopeContext()
    out = []
    for frame in frames:
        for event in normalizer.normalize(frame, NOW_NS):
            assert isinstance(event, Quote)
            record = encode(event, router.quote_route(event), ctx, NOW_NS)  # type: ignore[arg-type]
            attributes = dict(record.attributes)
            out.append((str(attributes["id"]), str(attributes["subject"]), record.key))
    return out


def test_two_combos_with_the_same_updated_keep_distinct_ids_and_keys() -> None:
    first, second = "28812380;;;265598/1,8314/-1", "28812380;;;265598/1,8314/+2"
    records = encoded([combo_frame(first, 1777552137000, "20.05"), combo_frame(second, 1777552137000, "530.1")])
    assert records == [
        (f"{first}:1777552137000:s", first, first.encode()),
        (f"{second}:1777552137000:s", second, second.encode()),
    ]


def test_combos_echoed_only_by_spread_conid_are_told_apart_by_their_conid_ex() -> None:
    first, second = "28812380;;;265598/1,8314/-1", "28812380;;;272093/1,8314/-1"
    records = encoded([combo_frame(first, 1, "1", topic="28812380"), combo_frame(second, 1, "2", topic="28812380"),
                       combo_frame(first, 2, "3", topic="28812380")])  # fmt: skip
    assert [subject for _, subject, _ in records] == [first, second, first]
    assert len({record_id for record_id, _, _ in records}) == 3


def test_a_combo_keeps_its_full_target_when_the_echoed_conid_ex_does_not_name_the_legs() -> None:
    target = "28812380;;;265598/1,8314/-1"
    frame = orjson.dumps({"topic": f"smd+{target}", "conidEx": "28812380", "conid": 28812380, "_updated": 5,
                          "31": "1"})  # fmt: skip
    (event,) = Normalizer().normalize(frame, NOW_NS)
    assert isinstance(event, Quote) and event.conid_ex == target and event.conid == 28812380


@pytest.mark.parametrize("target", ["265598", "265598@NASDAQ", "28812380;;;265598/1,8314/-1", "0;;;1/+1,2/-3"])
def test_market_data_targets_that_are_accepted(target: str) -> None:
    assert wire.market_data_target(target) == target


@pytest.mark.parametrize("target", ["AAPL", "265598@", "28812380;;;", "28812380;;;265598", "x;;;1/1",
                                    "28812380;;;265598/0", "28812380;;;265598/1,"])  # fmt: skip
def test_market_data_targets_that_are_refused_say_what_is_allowed(target: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        wire.market_data_target(target)


def test_a_comma_list_keeps_a_combo_whole() -> None:
    text = "265598,28812380;;;265598/1,8314/-1, 8314@NYSE,0;;;1/1,2/-1"
    assert wire.split_market_data_targets(text) == ["265598", "28812380;;;265598/1,8314/-1", "8314@NYSE",
                                                    "0;;;1/1,2/-1"]  # fmt: skip


def test_a_combo_on_the_command_line_becomes_one_smd_subscription_with_its_full_target() -> None:
    from bridge.app import desired_subscriptions
    from bridge.cli import build_parser, run_overrides
    from bridge.config import load_settings

    args = build_parser().parse_args(["run", "--market-data", "265598,28812380;;;265598/1,8314/-1"])
    subs = desired_subscriptions(load_settings(None, run_overrides(args)), None)
    assert [s.subscribe.split("+{")[0] for s in subs] == ["smd+265598", "smd+28812380;;;265598/1,8314/-1"]


def test_a_backlog_never_turns_a_bars_answer_into_its_latest_partial_update() -> None:
    from bridge.delivery.buffer import DeliveryBuffer

    buffer, router, ctx = DeliveryBuffer(max_market_events=1), Router(), EnvelopeContext()
    for frame in [*LIVE_FRAMES[:3], combo_frame("28812380;;;1/1,2/-1", 1, "1"), combo_frame("28812380;;;1/1,2/-1", 2, "2")]:
        for event in Normalizer().normalize(frame, NOW_NS):
            route = router.route(event)
            assert route is not None
            buffer.put(encode(event, route, ctx, NOW_NS))
    batch = buffer.take(100)
    bars = [orjson.loads(r.data) for r in (*batch.critical, *batch.market) if r.destination == "ibkr.bars.v1"]
    assert [(b["partial"], b["tick_num"]) for b in bars] == [(False, None), (True, 1), (True, 4)]
