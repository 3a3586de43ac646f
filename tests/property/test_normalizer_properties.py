"""Properties of the normalizer and the codec that must hold for any input."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import EnvelopeContext, decode_event, encode
from bridge.events import EVENT_TYPES, AccountLedger, Event, Quote
from bridge.ingest.fields import MARKET_DATA_FIELDS, Kind
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.routing import Router
from bridge.schemagen import schema_for

SESSIONS = Path(__file__).parents[1] / "data" / "sessions"
REAL_FRAMES = [line for path in sorted(SESSIONS.glob("*.jsonl")) for line in path.read_bytes().splitlines()]
NOW_NS = 1_777_000_000_000_000_000
ROUTER = Router(publish_internal=True)


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


JSON_OBJECTS = [obj for line in REAL_FRAMES if (obj := _json_object(line)) is not None]


def normalize_and_encode(normalizer: Normalizer, frame: bytes) -> list[Event]:
    events = normalizer.normalize(frame, NOW_NS)
    assert events, "every frame yields at least one event"
    ctx = EnvelopeContext()
    for event in events:
        route = ROUTER.route(event)
        assert route is not None
        encode(event, route, ctx, NOW_NS)  # must not raise either
    return events


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_yield_events_never_an_exception(data: bytes) -> None:
    normalize_and_encode(Normalizer(), data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(JSON_OBJECTS), st.data())
def test_mutated_real_frames_yield_events_never_an_exception(frame: dict[str, Any], data: st.DataObject) -> None:
    mutated = dict(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["replace", "delete", "add", "nest"]))
        keys = list(mutated)
        if action == "delete" and keys:
            mutated.pop(data.draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            mutated[data.draw(st.sampled_from(keys))] = data.draw(json_values)
        elif action == "add":
            mutated[data.draw(st.sampled_from(["31", "84", "conid", "args", "result", "error", "_updated", "topic", "x"]))] = data.draw(json_values)
        elif action == "nest" and isinstance(mutated.get("args"), list) and mutated["args"]:
            element = dict(mutated["args"][0]) if isinstance(mutated["args"][0], dict) else {}
            element[data.draw(st.text(max_size=12))] = data.draw(json_values)
            mutated["args"] = [element, *mutated["args"][1:]]
    normalizer = Normalizer()
    normalize_and_encode(normalizer, orjson.dumps(frame))
    normalize_and_encode(normalizer, orjson.dumps(mutated))


price_text = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False).map(str)
field_ids = st.sampled_from(["31", "84", "86", "85", "88", "7059", "70", "71", "7295", "55", "7184"])
field_values = {"31": price_text, "84": price_text, "86": price_text, "70": price_text, "71": price_text,
                "7295": price_text, "85": st.integers(0, 10**6).map(lambda n: f"{n:,}"),
                "88": st.integers(0, 10**6).map(str), "7059": st.integers(0, 999).map(str),
                "55": st.sampled_from(["AAPL", "IBM", ""]), "7184": st.sampled_from(["0", "1"])}  # fmt: skip
deltas = st.lists(st.dictionaries(field_ids, st.just(None), min_size=1, max_size=5), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_snapshot_then_deltas_merge_to_the_same_state_as_the_equivalent_full_frame(data: st.DataObject) -> None:
    frames = [{fid: data.draw(field_values[fid]) for fid in delta} for delta in data.draw(deltas)]
    full: dict[str, Any] = {}
    for frame in frames:
        full.update(frame)

    def quote_frame(updated: int, fields: dict[str, Any]) -> bytes:
        return orjson.dumps({"topic": "smd+265598", "conid": 265598, "_updated": updated, **fields})

    streamed, fresh = Normalizer(), Normalizer()
    merged: Quote | None = None
    for number, frame in enumerate(frames):
        for event in streamed.normalize(quote_frame(number, frame), NOW_NS):
            merged = event if isinstance(event, Quote) else merged
    (snapshot,) = fresh.normalize(quote_frame(0, full), NOW_NS)
    assert isinstance(merged, Quote) and isinstance(snapshot, Quote)
    assert merged.values == snapshot.values
    assert (merged.last_is_prior_close, merged.halted) == (snapshot.last_is_prior_close, snapshot.halted)


# ---------------------------------------------------------------------------- codec round trip

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
int64 = st.integers(-(2**63), 2**63 - 1)
json_scalars = st.none() | st.booleans() | int64 | finite | st.text(max_size=10)
_KIND_STRATEGY = {Kind.PRICE: finite, Kind.NUMBER: finite, Kind.INT: int64, Kind.TEXT: st.text(max_size=8),
                  Kind.FLAG01: st.booleans()}  # fmt: skip
quote_values = st.fixed_dictionaries({}, optional={name: st.none() | _KIND_STRATEGY[kind]
                                                   for name, kind in MARKET_DATA_FIELDS.values()})  # fmt: skip


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return json_values
    if tp is float:
        return finite
    if tp is int:
        return int64
    if tp in (str, bool, type(None)):
        return st.from_type(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[strategy_for(a) for a in typing.get_args(tp)])
    if origin is tuple:
        return st.lists(strategy_for(typing.get_args(tp)[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), strategy_for(typing.get_args(tp)[1]), max_size=3)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return builds(tp)
    raise TypeError(tp)


def builds(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    overrides = {"values": quote_values} if cls is Quote else {}
    if cls is AccountLedger:
        overrides = {"values": st.dictionaries(st.text(max_size=8), st.none() | finite, max_size=3)}
    kwargs = {f.name: overrides[f.name] if f.name in overrides else strategy_for(hints[f.name])
              for f in dataclasses.fields(cls)}  # fmt: skip
    return st.builds(cls, **kwargs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_event_type_round_trips_through_the_codec_and_validates(data: st.DataObject) -> None:
    for cls in EVENT_TYPES:
        event = data.draw(builds(cls))
        route = ROUTER.route(event)
        assert route is not None
        record = encode(event, route, EnvelopeContext(), NOW_NS)
        jsonschema.validate(orjson.loads(record.data), SCHEMAS[cls])
        assert decode_event(cls.TYPE, record.data) == event


SCHEMAS = {cls: schema_for(cls) for cls in EVENT_TYPES}
