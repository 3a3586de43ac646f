"""Envelope attributes, deterministic ids, destinations and keys."""

from __future__ import annotations

import orjson

from bridge.codec import EnvelopeContext, decode_structured, encode
from bridge.events import Control, ControlKind, Execution, Heartbeat, Order, Pnl, Quote
from bridge.routing import Router

NOW_NS = 1_777_000_000_123_000_000


def quote(**overrides: object) -> Quote:
    fields: dict[str, object] = dict(conid=265598, conid_ex="265598", updated_ms=1777552110061, server_id="q1",
                                     snapshot=False, changed=("bid",), values={"bid": 1.5})  # fmt: skip
    fields.update(overrides)
    return Quote(**fields)  # type: ignore[arg-type]


def test_envelope_carries_every_cloudevents_attribute_and_the_extensions() -> None:
    event = quote()
    route = Router().route(event)
    assert route is not None
    record = encode(event, route, EnvelopeContext(source="urn:test", session_epoch=3), NOW_NS)
    attributes, data = decode_structured(record.structured())
    assert attributes == {
        "specversion": "1.0", "id": "265598:1777552110061", "source": "urn:test",
        "type": "com.ibkr.marketdata.quote.v1", "time": "2026-04-30T12:28:30.061Z", "subject": "265598",
        "datacontenttype": "application/json", "dataschema": "urn:ibkr-bridge:schema:com.ibkr.marketdata.quote.v1",
        "sessionepoch": 3, "sequence": 1,
    }  # fmt: skip
    assert data == orjson.loads(record.data)
    assert (record.destination, record.key) == ("ibkr.marketdata.v1", b"265598")


def test_sequence_increases_per_encoded_event() -> None:
    ctx, router = EnvelopeContext(), Router()
    records = [encode(quote(updated_ms=n), router.route(quote()), ctx, NOW_NS) for n in range(3)]  # type: ignore[arg-type]
    assert [dict(r.attributes)["sequence"] for r in records] == [1, 2, 3]


def test_an_implausible_gateway_time_falls_back_to_the_receive_time() -> None:
    event = quote(updated_ms=-9_223_372_036_854_775_807)
    record = encode(event, Router().route(event), EnvelopeContext(), NOW_NS)  # type: ignore[arg-type]
    assert dict(record.attributes)["time"] == "2026-04-24T03:06:40.123Z"


def test_times_are_right_across_repeated_milliseconds_and_second_boundaries() -> None:
    ctx = EnvelopeContext()
    times = [1777552110061, 1777552110061, 1777552110999, 1777552111000, 1777552111000, 1777552110061]
    assert [ctx.time_text(ms) for ms in times] == [
        "2026-04-30T12:28:30.061Z", "2026-04-30T12:28:30.061Z", "2026-04-30T12:28:30.999Z",
        "2026-04-30T12:28:31.000Z", "2026-04-30T12:28:31.000Z", "2026-04-30T12:28:30.061Z",
    ]  # fmt: skip


def test_execution_ids_are_the_execution_id_and_the_commission_copy_is_distinct() -> None:
    router, ctx = Router(), EnvelopeContext()
    first = Execution("E1", "U1", 9, False)
    update = Execution("E1", "U1", 9, False, commission=1.0)
    ids = [dict(encode(e, router.route(e), ctx, NOW_NS).attributes)["id"] for e in (first, update)]  # type: ignore[arg-type]
    assert ids == ["E1", "E1:commission"]


def test_reconciled_copy_of_an_order_state_has_the_live_copy_id() -> None:
    router, ctx = Router(), EnvelopeContext()
    live = Order("DU1", 7, ("status",), False, status="Filled", filled_quantity=5.0)
    reconciled = Order("DU1", 7, ("status", "filled_quantity"), True, status="Filled", filled_quantity=5.0)
    ids = {dict(encode(e, router.route(e), ctx, NOW_NS).attributes)["id"] for e in (live, reconciled)}  # type: ignore[arg-type]
    assert len(ids) == 1


def test_keys_follow_the_family_conid_order_id_or_account_alias() -> None:
    router = Router(account_aliases={"DU1": "main"})
    assert router.route(Order("DU1", 7, (), False)).key == b"7"  # type: ignore[union-attr]
    assert router.route(Execution("E", "DU1", 7, False)).key == b"7"  # type: ignore[union-attr]
    assert router.route(Pnl("DU1", ())).key == b"main"  # type: ignore[union-attr]
    assert router.route(Pnl("DU2", ())).key == b"DU2"  # type: ignore[union-attr]


def test_internal_events_are_not_published_unless_asked() -> None:
    assert Router().route(Heartbeat(1)) is None
    assert Router().route(Control(ControlKind.DUPLICATE, "tic")) is None
    assert Router(publish_internal=True).route(Heartbeat(1)) is not None


def test_destination_templates_can_rename_and_split_per_key() -> None:
    router = Router(destinations={"marketdata": "md.{key}", "orders": "prod.{family}"})
    assert router.route(quote()).destination == "md.265598"  # type: ignore[union-attr]
    assert router.route(Order("DU1", 7, (), False)).destination == "prod.orders"  # type: ignore[union-attr]


def test_combo_quotes_are_keyed_by_their_conidex() -> None:
    route = Router().route(quote(conid=0, conid_ex="0;;;265598/1,8314/-1"))
    assert route is not None and route.key == b"0;;;265598/1,8314/-1"


def test_the_fast_quote_encoding_is_byte_for_byte_the_generic_one() -> None:
    from bridge.events import MarketDataAvailability

    for availability in (None, MarketDataAvailability("RpB", "realtime", False, True, True)):
        event = quote(availability=availability, extra={"99999": "x"}, changed=("bid", "ask"), revision=2)
        record = encode(event, Router().route(event), EnvelopeContext(), NOW_NS)  # type: ignore[arg-type]
        assert record.data == orjson.dumps(event)


def test_quote_ids_from_the_fast_encoder_match_the_generic_id_rules() -> None:
    from bridge.codec import encode_quote, event_id

    router, ctx = Router(), EnvelopeContext()
    for event in (quote(), quote(revision=3), quote(snapshot=True), quote(revision=2, snapshot=True),
                  quote(updated_ms=None), quote(conid=0, conid_ex="0;;;265598/1,8314/-1")):  # fmt: skip
        route = router.quote_route(event)
        assert route is not None and route == router.route(event)
        record = encode_quote(event, route, ctx, NOW_NS)
        assert record.id == event_id(event, 0)
        assert record.data == orjson.dumps(event)
    event = quote(revision=3, snapshot=True)
    assert encode_quote(event, router.quote_route(event), ctx, NOW_NS).id == "265598:1777552110061:3:s"  # type: ignore[arg-type]


def test_quotes_alternating_between_availabilities_each_carry_their_own() -> None:
    from bridge.events import MarketDataAvailability
    from bridge.ingest.fields import AvailabilityCodes

    decode = AvailabilityCodes()
    realtime, delayed = decode("RpB"), decode("DPB")
    assert realtime is decode("RpB") and realtime != delayed
    other = MarketDataAvailability("RpB", "realtime", False, True, True)  # equal, but another object
    router, ctx = Router(), EnvelopeContext()
    for availability in (realtime, delayed, None, realtime, other, None, delayed):
        event = quote(availability=availability)
        record = encode(event, router.route(event), ctx, NOW_NS)  # type: ignore[arg-type]
        assert record.data == orjson.dumps(event)


def test_combo_quotes_with_conid_zero_keep_their_own_routes_on_the_fast_path() -> None:
    router = Router()
    first = router.quote_route(quote(conid=0, conid_ex="0;;;265598/1,8314/-1"))
    second = router.quote_route(quote(conid=0, conid_ex="0;;;265598/1,8314/+1"))
    plain = router.quote_route(quote(conid=8314, conid_ex="8314"))
    assert first is not None and second is not None and plain is not None
    assert (first.key, second.key, plain.key) == (b"0;;;265598/1,8314/-1", b"0;;;265598/1,8314/+1", b"8314")


def test_records_carry_the_epoch_of_the_latest_lifecycle_event_in_order() -> None:
    from bridge.events import Lifecycle, LifecycleKind
    from bridge.pipeline import Pipeline

    pipeline = Pipeline(Router(), EnvelopeContext())
    authenticated = Lifecycle(kind=LifecycleKind.AUTHENTICATED, at_ms=1, session_epoch=2)
    records = pipeline.records([quote(), authenticated, quote(updated_ms=1777552110062)], NOW_NS)
    epochs = [decode_structured(r.structured())[0]["sessionepoch"] for r in records]
    assert epochs == [0, 2, 2]
    assert decode_structured(records[1].structured())[1]["session_epoch"] == 2
    assert pipeline.envelope.session_epoch == 2
