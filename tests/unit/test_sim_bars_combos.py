"""The simulator's bars (live shape by default, documented shape as an option) and combo quotes."""

from __future__ import annotations

import random

import orjson

from bridge.events import Bars
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.sim.account import history_frame, history_update
from bridge.sim.market import QuoteState, combo_legs, combo_values, instrument

ARGS = {"period": "1h", "bar": "1min", "source": "trades"}


def test_live_shape_bars_carry_no_t_and_normalize_to_times_from_start_time() -> None:
    frame = history_frame(265598, "195437", random.Random(1), ARGS, live=True)
    assert all("t" not in bar for bar in frame["data"]) and frame["barLength"] == 60 and "payload" in frame
    (event,) = Normalizer().normalize(orjson.dumps(frame), 0)
    assert isinstance(event, Bars) and event.bar_times == "derived" and event.start_time_ms is not None
    assert [b.time_ms for b in event.bars] == [event.start_time_ms + i * 60_000 for i in range(len(event.bars))]
    assert event.high is not None and event.high.minutes_from_start is not None
    assert event.bars[event.high.minutes_from_start].high == event.high.price


def test_documented_shape_bars_carry_their_t() -> None:
    frame = history_frame(265598, "195437", random.Random(1), ARGS, live=False)
    assert all("t" in bar for bar in frame["data"]) and "payload" not in frame
    (event,) = Normalizer().normalize(orjson.dumps(frame), 0)
    assert isinstance(event, Bars) and event.bar_times == "sent"


def test_live_updates_are_tick_num_frames_with_one_partial_bar() -> None:
    update = history_update(265598, "195437", 3, QuoteState(instrument(265598), random.Random(1)), random.Random(2))
    assert update["tickNum"] == 3 and update["points"] == 0 and len(update["data"]) == 1
    (event,) = Normalizer().normalize(orjson.dumps(update), 0)
    assert isinstance(event, Bars) and event.partial and event.tick_num == 3


def test_a_combo_is_quoted_from_its_legs_and_ratios() -> None:
    assert combo_legs("28812380;;;265598/1,8314/-2") == ((265598, 1), (8314, -2))
    rng = random.Random(3)
    aapl, ibm = QuoteState(instrument(265598), rng), QuoteState(instrument(8314), rng)
    values = combo_values([(aapl, 1), (ibm, -2)], frozenset({"31", "84", "86", "88"}))
    assert values["31"] == f"{aapl.last - 2 * ibm.last:.2f}"
    assert values["84"] == f"{aapl.bid - 2 * ibm.ask:.2f}"  # selling the spread: sell AAPL, buy IBM back
    assert values["86"] == f"{aapl.ask - 2 * ibm.bid:.2f}"
    assert values["88"] == f"{min(aapl.bid_size, ibm.ask_size // 2):,}"


def test_the_simulator_command_line_chooses_the_bars_shape() -> None:
    import argparse

    from bridge.sim.cli import config_from_args, configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert config_from_args(parser.parse_args([])).bars_shape == "live"
    documented = config_from_args(parser.parse_args(["--bars-shape", "documented", "--bars-update-s", "0.2"]))
    assert (documented.bars_shape, documented.bars_update_s) == ("documented", 0.2)
