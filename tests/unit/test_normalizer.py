"""Behaviour of the normalizer, one rule per test, on frames quoted in the protocol reference."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from bridge.events import (
    AccountLedger,
    AuthStatus,
    Bars,
    BookLadder,
    Control,
    ControlKind,
    DeadLetter,
    Event,
    Execution,
    GatewayErrorMessage,
    MarketDataAvailability,
    Notification,
    Order,
    Pnl,
    Quote,
    TickleReply,
)
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.quote_fast import new_quote

NOW_NS = 1_777_000_000_000_000_000


def run(normalizer: Normalizer, *frames: bytes | str | dict[str, object]) -> list[Event]:
    events: list[Event] = []
    for frame in frames:
        data = orjson.dumps(frame) if isinstance(frame, dict) else frame
        produced = normalizer.normalize(data, NOW_NS)
        assert produced, "every frame must yield at least one event"
        events.extend(produced)
    return events


def smd(conid: int = 265598, updated: int = 1777552110061, **fields: object) -> dict[str, object]:
    return {"topic": f"smd+{conid}", "conid": conid, "conidEx": str(conid), "_updated": updated,
            "server_id": "q1", "6119": "q1", **fields}  # fmt: skip


def only(events: list[Event], cls: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, cls)]


def test_first_market_data_frame_is_a_snapshot_and_later_frames_are_merged_deltas() -> None:
    n = Normalizer()
    first, delta = run(n, smd(**{"31": "271.67", "84": "271.55", "86": "271.66"}),
                       smd(updated=1777552129156, **{"84": "271.70"}))  # fmt: skip
    assert isinstance(first, Quote) and isinstance(delta, Quote)
    assert first.snapshot and not delta.snapshot
    assert delta.values == {"last": 271.67, "bid": 271.70, "ask": 271.66}
    assert delta.changed == ("bid",)


def test_duplicated_first_snapshot_changes_nothing_and_says_so() -> None:
    n = Normalizer()
    frame = smd(**{"31": "271.67"})
    _, duplicate = run(n, frame, frame)
    assert isinstance(duplicate, Control) and duplicate.kind is ControlKind.DUPLICATE


def test_prior_close_and_halted_prefixes_become_flags_not_numbers() -> None:
    n = Normalizer()
    closed, halted, trading = run(n, smd(**{"31": "C271.60"}), smd(updated=2, **{"31": "H271.60"}),
                                  smd(updated=3, **{"31": "271.90"}))  # fmt: skip
    assert isinstance(closed, Quote) and closed.values["last"] == 271.60 and closed.last_is_prior_close
    assert isinstance(halted, Quote) and halted.halted and not halted.last_is_prior_close
    assert isinstance(trading, Quote) and not trading.halted and trading.values["last"] == 271.90


def test_suffixes_commas_and_percent_are_parsed_into_numbers() -> None:
    (quote,) = run(Normalizer(), smd(**{"88": "1,300", "87": "24.2M", "7282": "52.1K",
                                        "7289": "3.9T", "80": "1.25%", "31": "1,234.50"}))  # fmt: skip
    assert isinstance(quote, Quote)
    assert quote.values["bid_size"] == 1300.0
    assert quote.values["volume"] == 24_200_000.0
    assert quote.values["average_volume"] == 52_100.0
    assert quote.values["market_cap"] == 3.9e12
    assert quote.values["unrealized_pnl_pct"] == 1.25
    assert quote.values["last"] == 1234.5


def test_numbers_ending_in_other_than_a_digit_parse_as_before_or_are_kept_raw() -> None:
    (quote,) = run(Normalizer(), smd(**{"87": "1.5m", "7282": " 12 ", "85": "7.", "86": "C10.",
                                        "84": "inf", "88": "nan", "82": "1e999"}))  # fmt: skip
    assert isinstance(quote, Quote)
    assert quote.values["volume"] == 1_500_000.0
    assert quote.values["average_volume"] == 12.0
    assert quote.values["ask_size"] == 7.0
    assert quote.values["ask"] == 10.0 and quote.last_is_prior_close is False
    assert quote.values["bid"] is None and quote.extra["84"] == "inf"
    assert quote.values["bid_size"] is None and quote.extra["88"] == "nan"
    assert quote.values["change"] is None and quote.extra["82"] == "1e999"


def test_quotes_are_built_exactly_like_the_dataclass_and_stay_frozen() -> None:
    availability = MarketDataAvailability("RpB", "realtime", True, False, True)
    fields = (265598, "265598", 17, "q1", True, ("last",), {"last": 1.5}, 2, True, False, availability, {"x": 1})  # fmt: skip
    built = new_quote(*fields)
    assert built == Quote(*fields) and repr(built) == repr(Quote(*fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.conid = 1  # type: ignore[misc]


def test_empty_string_means_unknown_never_zero() -> None:
    n = Normalizer()
    _, cleared = run(n, smd(**{"84": "271.55"}), smd(updated=2, **{"84": ""}))
    assert isinstance(cleared, Quote)
    assert cleared.values["bid"] is None and cleared.changed == ("bid",)


def test_availability_field_6509_is_decoded() -> None:
    (quote,) = run(Normalizer(), smd(**{"6509": "RpB", "31": "1"}))
    assert isinstance(quote, Quote) and quote.availability is not None
    assert quote.availability.timeline == "realtime"
    assert quote.availability.consolidated is True and quote.availability.top_of_book is True


def test_unknown_and_unparseable_field_values_are_kept_not_dropped() -> None:
    (quote,) = run(Normalizer(), smd(**{"99999": "mystery", "7295": "N/A", "6508": "&serviceID1=122"}))
    assert isinstance(quote, Quote)
    assert quote.extra == {"99999": "mystery", "7295": "N/A"}
    assert quote.values["open"] is None
    assert quote.values["service_params"] == "&serviceID1=122"


def test_quoted_conid_and_updated_are_accepted() -> None:
    frame = smd(**{"31": "1.5"})
    frame["conid"], frame["_updated"] = "265598", "1777552110061"
    (quote,) = run(Normalizer(), frame)
    assert isinstance(quote, Quote) and quote.conid == 265598 and quote.updated_ms == 1777552110061


def test_resubscribe_flags_the_next_frame_as_snapshot_again() -> None:
    n = Normalizer()
    run(n, smd(**{"31": "1"}))
    n.expect_snapshot(265598)
    (quote,) = run(n, smd(updated=5, **{"84": "0.9"}))
    assert isinstance(quote, Quote) and quote.snapshot and quote.values == {"last": 1.0, "bid": 0.9}


def test_two_different_frames_in_the_same_millisecond_get_distinct_revisions() -> None:
    n = Normalizer()
    a, b = run(n, smd(updated=7, **{"31": "1"}), smd(updated=7, **{"84": "2"}))
    assert isinstance(a, Quote) and isinstance(b, Quote)
    assert (a.revision, b.revision) == (0, 1)


def test_sparse_order_deltas_merge_into_full_state_in_array_order() -> None:
    n = Normalizer()
    events = run(n, {"topic": "sor", "args": [
        {"acct": "DU1", "orderId": 5, "sizeAndFills": "100/622", "filledQuantity": 100.0,
         "remainingQuantity": 622.0, "avgPrice": "382.45", "status": "Submitted", "price": ""},
        {"acct": "DU1", "orderId": 5, "sizeAndFills": "700/22"},
        {"acct": "DU1", "orderId": 5, "sizeAndFills": "722", "status": "Filled", "price": 382.4}]})  # fmt: skip
    orders = [e for e in events if isinstance(e, Order)]
    assert [o.status for o in orders] == ["Submitted", "Submitted", "Filled"]
    assert orders[0].price is None and orders[2].price == 382.4
    assert (orders[1].filled_quantity, orders[1].remaining_quantity) == (700.0, 22.0)
    assert orders[2].avg_price == 382.45 and orders[2].total_size == 722.0


def test_sparse_order_delta_never_resets_a_missing_number_to_zero() -> None:
    n = Normalizer()
    run(n, {"topic": "sor", "args": [{"acct": "DU1", "orderId": 5, "filledQuantity": 3.0, "status": "Submitted"}]})
    (order,) = run(n, {"topic": "sor", "args": [{"acct": "DU1", "orderId": 5, "status": "Cancelled"}]})
    assert isinstance(order, Order) and order.filled_quantity == 3.0 and order.status == "Cancelled"


def test_conidex_and_conidEx_are_both_accepted_on_orders() -> None:
    n = Normalizer()
    a, b = run(n, {"topic": "sor", "args": [{"acct": "A", "orderId": 1, "conidex": "265598"}]},
               {"topic": "sor", "args": [{"acct": "A", "orderId": 2, "conidEx": "8314"}]})  # fmt: skip
    assert isinstance(a, Order) and isinstance(b, Order)
    assert (a.conid_ex, b.conid_ex) == ("265598", "8314")


def test_one_bad_order_element_is_dead_lettered_and_the_others_survive() -> None:
    events = run(Normalizer(), {"topic": "sor", "args": [
        {"acct": "A", "orderId": 1, "status": "Submitted"}, {"acct": "A", "status": "x"},
        {"acct": "A", "orderId": 2, "status": "Submitted"}]})  # fmt: skip
    assert [type(e) for e in events] == [Order, DeadLetter, Order]


def test_execution_copy_adding_commission_updates_rather_than_duplicates() -> None:
    n = Normalizer()
    fill = {"execution_id": "E1", "side": "B", "size": 2.0, "price": "248.60", "order_id": 9, "account": "U1"}
    events = run(n, {"topic": "str", "args": []}, {"topic": "str", "args": [fill]},
                 {"topic": "str", "args": [{**fill, "commission": "1.0"}]},
                 {"topic": "str", "args": [{**fill, "commission": "1.0"}]})  # fmt: skip
    ack, first, update, again = events
    assert isinstance(ack, Control) and ack.kind is ControlKind.SUBSCRIPTION_ACK
    assert isinstance(first, Execution) and first.commission is None and first.side == "BUY"
    assert isinstance(update, Execution) and update.commission == 1.0
    assert isinstance(again, Control) and again.kind is ControlKind.DUPLICATE


def test_reconciliation_does_not_republish_an_execution_already_seen() -> None:
    n = Normalizer()
    fill = {"execution_id": "E1", "size": 1, "price": "1.0", "order_id": 9, "commission": "0.5"}
    run(n, {"topic": "str", "args": [fill]})
    assert n.reconcile_execution(fill) is None
    missed = n.reconcile_execution({**fill, "execution_id": "E2"})
    assert isinstance(missed, Execution) and missed.reconciled


def test_reconciled_order_is_published_only_when_its_state_changed() -> None:
    n = Normalizer()
    row = {"acct": "A", "orderId": 1, "status": "Submitted", "filledQuantity": 0.0}
    run(n, {"topic": "sor", "args": [row]})
    assert n.reconcile_order(row) is None
    filled = n.reconcile_order({**row, "status": "Filled", "filledQuantity": 1.0})
    assert isinstance(filled, Order) and filled.reconciled and filled.changed == ("status", "filled_quantity")


def test_pnl_rows_are_keyed_by_account_and_merged() -> None:
    n = Normalizer()
    _, partial = run(n, {"topic": "spl", "args": {"DU9.Core": {"rowType": 1, "dpl": -5.0, "nl": 100.0}}},
                     {"topic": "spl", "args": {"DU9.Core": {"dpl": -6.0}}})  # fmt: skip
    assert isinstance(partial, Pnl) and partial.account == "DU9"
    assert (partial.daily_pnl, partial.net_liquidation, partial.changed) == (-6.0, 100.0, ("daily_pnl",))


def test_ledger_timestamps_are_seconds_and_blank_rows_mean_unchanged() -> None:
    n = Normalizer()
    row = {"acctCode": "DU9", "key": "LedgerListBASE", "secondKey": "BASE", "cashbalance": 10.0,
           "timestamp": 1783031080}  # fmt: skip
    ledger, blank = run(n, {"topic": "sld+DU9", "result": [row]},
                        {"topic": "sld+DU9", "result": [{"key": "LedgerListBASE", "timestamp": 1783031090}]})
    assert isinstance(ledger, AccountLedger) and ledger.timestamp_ms == 1_783_031_080_000
    assert isinstance(blank, Control) and blank.kind is ControlKind.UNCHANGED


def test_split_sts_frames_leave_absent_keys_unknown_not_false() -> None:
    events = run(Normalizer(), {"topic": "sts", "args": {"authenticated": False}},
                 {"topic": "sts", "args": {"competing": False}})  # fmt: skip
    first, second = events
    assert isinstance(first, AuthStatus) and first.authenticated is False and first.competing is None
    assert isinstance(second, AuthStatus) and second.authenticated is None and second.competing is False


def test_repeated_tic_replies_collapse_on_last_accessed() -> None:
    reply = {"topic": "tic", "alive": True, "id": "s1", "lastAccessed": 10}
    events = run(Normalizer(), reply, reply, reply, reply, {**reply, "lastAccessed": 11})
    assert [type(e) for e in events] == [TickleReply, Control, Control, Control, TickleReply]


def test_notifications_arrive_as_object_or_list() -> None:
    events = run(Normalizer(), {"topic": "ntf", "args": {"id": "A", "text": "t"}},
                 {"topic": "ntf", "args": [{"id": "B"}, {"id": "C"}]})  # fmt: skip
    assert [e.id for e in only(events, Notification)] == ["A", "B", "C"]  # type: ignore[attr-defined]


def test_error_key_wins_over_topic() -> None:
    (error,) = run(Normalizer(), {"error": "No accounts", "code": 500, "topic": "smd"})
    assert isinstance(error, GatewayErrorMessage) and (error.error, error.code, error.topic) == ("No accounts", 500, "smd")


def test_book_last_trade_row_splits_size_at_price() -> None:
    (book,) = run(Normalizer(), {"topic": "sbd+DU1+265598", "data": [
        {"row": 1, "focus": 1, "price": "100 @ 271.70"}, {"row": 0, "focus": 0, "price": "271.72", "ask": "1,200"}]})
    assert isinstance(book, BookLadder) and book.account == "DU1" and book.conid == 265598
    assert [r.row for r in book.rows] == [0, 1]
    assert book.rows[1].last_size == 100.0 and book.rows[1].price == 271.70 and book.rows[0].ask_size == 1200.0


def test_bar_summary_prices_are_divided_by_the_price_factor() -> None:
    (bars,) = run(Normalizer(), {"topic": "smh+265598", "serverId": "7", "priceFactor": 100,
                                 "high": "19293/6942998.04/1440", "data": [{"o": 1.0, "t": 5}]})  # fmt: skip
    assert isinstance(bars, Bars) and bars.high is not None
    assert (bars.high.price, bars.high.volume, bars.high.minutes_from_start) == (192.93, 6942998.04, 1440)


def test_invalid_utf8_inside_an_order_frame_is_repaired_not_lost() -> None:
    n = Normalizer()
    (order,) = n.normalize(b'{"topic":"sor","args":[{"acct":"A","orderId":1,"orderDesc":"XYZ\x99"}]}', NOW_NS)
    assert isinstance(order, Order) and order.description == "XYZ\u2122"


def test_undecodable_binary_frame_becomes_a_dead_letter_with_base64_raw_bytes() -> None:
    (dead,) = Normalizer().normalize(b"\x99\xfe\xff", NOW_NS)
    assert isinstance(dead, DeadLetter) and dead.raw_encoding == "base64" and dead.raw == "mf7/"
    assert dead.reason == "invalid_json"


def test_unknown_topic_becomes_a_dead_letter_naming_the_topic() -> None:
    (dead,) = Normalizer().normalize(b'{"topic":"xyz"}', NOW_NS)
    assert isinstance(dead, DeadLetter) and dead.reason == "unknown_topic" and dead.topic == "xyz"


def test_finished_orders_are_forgotten_first_so_order_state_stays_bounded() -> None:
    from bridge.ingest.normalize.trading import OrderBook

    book = OrderBook(max_orders=20)
    for order_id in range(1, 40):
        book.apply({"acct": "A", "orderId": order_id, "status": "Filled" if order_id % 2 else "Submitted"})
    assert len(book) <= 21
    working = book.apply({"acct": "A", "orderId": 2, "status": "Submitted"})
    assert working is None  # a working order is remembered: the same state changes nothing


def test_a_reconciliation_row_older_than_live_frames_never_moves_an_order_back() -> None:
    n = Normalizer()
    run(n, {"topic": "sor", "args": [{"acct": "A", "orderId": 1, "status": "Filled", "filledQuantity": 5.0}]})
    assert n.reconcile_order({"acct": "A", "orderId": 1, "status": "Submitted", "filledQuantity": 2.0}) is None
    assert n.reconcile_order({"acct": "A", "orderId": 1, "status": "PreSubmitted"}) is None
    assert n.reconcile_order({"acct": "B", "orderId": 2, "status": "Submitted"}) is not None  # unknown: published


def test_a_prefixed_price_parsed_once_is_not_reused_for_a_number_field() -> None:
    n = Normalizer()
    first, second = run(n, smd(**{"84": "C10.5"}), smd(updated=2, **{"85": "C10.5"}))
    assert isinstance(first, Quote) and isinstance(second, Quote)
    assert first.values["bid"] == 10.5
    assert second.values["ask_size"] is None and second.extra["85"] == "C10.5"


def test_repeated_values_parse_the_same_and_true_is_never_taken_for_one() -> None:
    n = Normalizer()
    events = run(n, smd(**{"85": "1", "84": "1,234.50"}), smd(updated=2, **{"85": True, "84": "1"}),
                 smd(updated=3, **{"85": "1", "84": "1,234.50"}))  # fmt: skip
    first, second, third = only(events, Quote)
    assert isinstance(first, Quote) and isinstance(second, Quote) and isinstance(third, Quote)
    assert first.values["ask_size"] == 1.0 and first.values["bid"] == 1234.5
    assert second.values["ask_size"] is None and second.extra["85"] is True and second.values["bid"] == 1.0
    assert third.values == first.values


def test_a_list_or_object_value_is_kept_raw() -> None:
    (quote,) = run(Normalizer(), smd(**{"84": [1], "31": {"a": 1}, "86": "2"}))
    assert isinstance(quote, Quote)
    assert quote.values["bid"] is None and quote.extra["84"] == [1]
    assert quote.values["last"] is None and quote.extra["31"] == {"a": 1}
    assert quote.values["ask"] == 2.0


def test_the_parse_cache_stays_bounded_and_correct_when_it_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from bridge.ingest.fields import ParseCache

    monkeypatch.setattr(ParseCache, "MAX_ENTRIES", 4)
    n = Normalizer()
    events = run(n, *(smd(updated=i, **{"84": f"{i}.25"}) for i in range(1, 20)))
    assert [e.values["bid"] for e in only(events, Quote)] == [i + 0.25 for i in range(1, 20)]  # type: ignore[attr-defined]
    assert all(len(spec[1]) <= 4 for spec in n._quote_keys.values() if spec is not None)


def test_a_million_distinct_values_keep_every_parse_cache_within_its_bounds() -> None:
    from bridge.ingest.fields import ParseCache

    n, other = Normalizer(), Normalizer()
    caches = {id(spec[1]): spec[1] for spec in n._quote_keys.values() if spec is not None}
    shared = {id(spec[1]) for spec in other._quote_keys.values() if spec is not None} & set(caches)
    assert not shared, "parse caches are per normalizer"
    bid = n._quote_keys["84"][1]
    for i in range(1_000_000):  # short distinct prices, then long hostile ones
        assert bid[f"{i}.5"] == i + 0.5
        assert bid[f"{i}.5".rjust(1000, "0")] == i + 0.5
    assert 0 < len(bid) <= ParseCache.MAX_ENTRIES
    assert max(map(len, bid)) <= ParseCache.MAX_KEY_CHARS, "a long value is parsed, never kept"
    assert all(len(c) == 0 for c in caches.values() if c is not bid)


def test_market_data_frames_are_tallied_for_a_metering_caller_and_other_frames_are_not() -> None:
    n = Normalizer()
    frames = [orjson.dumps(smd(**{"31": "1"})), orjson.dumps(smd(**{"31": "1"})),
              orjson.dumps({"topic": "system", "hb": 1})]  # fmt: skip
    run(n, *frames)
    assert n.md_frames == 2 and n.md_unchanged_frames == 1
    assert n.md_bytes == len(frames[0]) + len(frames[1]) and n.md_received_ns == NOW_NS
