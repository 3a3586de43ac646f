"""Arbitrary, hostile JSON through normalize -> route -> encode never raises, and the merged
state it leaves behind never makes a later, harmless frame fail.

Frames are built as JSON text, so they can hold what no Python value round-trips: nesting to
orjson's reading limit (1,024) and past its writing limit (254), integers past 64 bits, NaN and
Infinity tokens, lone surrogates, duplicate keys, and every known field with a value of the
wrong type.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import EnvelopeContext, encode
from bridge.events import Quote
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.routing import Router
from tests.fuzz.hostile import ELEMENT_KEYS, HOSTILE_SCALARS, QUOTE_KEYS, ROW_KEYS, TOPICS

ROUTER = Router(publish_internal=True)
NOW_NS = 1_777_000_000_000_000_000


def key_text(key: str) -> str:
    return orjson.dumps(key).decode()


scalars = st.sampled_from(HOSTILE_SCALARS) | st.integers().map(str) | st.text(max_size=6).map(
    lambda s: orjson.dumps(s).decode()
)
keys = st.sampled_from(QUOTE_KEYS + ELEMENT_KEYS + ROW_KEYS) | st.text(max_size=6)


def objects(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pairs = st.lists(st.tuples(keys, children), max_size=4)  # a list of pairs: keys may repeat
    return pairs.map(lambda ps: "{" + ",".join(f"{key_text(k)}:{v}" for k, v in ps) + "}")


json_text = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4).map(lambda vs: "[" + ",".join(vs) + "]") | objects(children),
    max_leaves=10,
)
depths = st.sampled_from([33, 254, 255, 256, 300, 600, 1023])


@st.composite
def nested(draw: st.DrawFn) -> str:
    depth, leaf = draw(depths), draw(json_text)
    if draw(st.booleans()):
        return "[" * depth + leaf + "]" * depth
    return '{"k":' * depth + leaf + "}" * depth


values = json_text | nested()


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    topic = draw(st.sampled_from(TOPICS) | st.text(max_size=12))
    fields = draw(st.lists(st.tuples(st.sampled_from(QUOTE_KEYS) | keys, values), max_size=6))
    elements = draw(st.lists(st.lists(st.tuples(st.sampled_from(ELEMENT_KEYS + ROW_KEYS), values), max_size=6),
                             max_size=3))  # fmt: skip
    parts = [f'"topic":{key_text(topic)}'] + [f"{key_text(k)}:{v}" for k, v in fields]
    element_text = "[" + ",".join("{" + ",".join(f"{key_text(k)}:{v}" for k, v in e) + "}" for e in elements) + "]"
    container = draw(st.sampled_from(["args", "result", None]))
    if container:
        parts.append(f'"{container}":{element_text}')
    return ("{" + ",".join(parts) + "}").encode("utf-8", "surrogatepass")


def normalize_route_encode(normalizer: Normalizer, frame: bytes) -> None:
    ctx = EnvelopeContext()
    for event in normalizer.normalize(frame, NOW_NS):
        route = ROUTER.route(event)
        assert route is not None
        record = encode(event, route, ctx, NOW_NS)
        assert len(record.data) < 200_000, f"{type(event).__name__} of {len(record.data)} bytes"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(frames(), min_size=1, max_size=4))
def test_hostile_frames_never_raise_through_normalize_route_and_encode(batch: list[bytes]) -> None:
    normalizer = Normalizer()
    for frame in batch:
        normalize_route_encode(normalizer, frame)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from([*QUOTE_KEYS[:-6], "7777", "x"]), values)
def test_a_hostile_quote_value_never_poisons_the_next_harmless_quote(key: str, value: str) -> None:
    normalizer = Normalizer()
    hostile = f'{{"topic":"smd+265598","conid":265598,"31":"1.00",{key_text(key)}:{value}}}'
    normalize_route_encode(normalizer, hostile.encode("utf-8", "surrogatepass"))
    harmless = b'{"topic":"smd+265598","conid":265598,"31":"1.01"}'
    events = normalizer.normalize(harmless, NOW_NS)
    assert any(isinstance(e, Quote) for e in events)
    for event in events:
        route = ROUTER.route(event)
        assert route is not None
        encode(event, route, EnvelopeContext(), NOW_NS)
