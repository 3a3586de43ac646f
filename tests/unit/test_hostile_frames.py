"""Frames that once took the bridge down: each is normalized into encodable events, and merged
state never keeps what the encoder refuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from bridge.codec import EnvelopeContext, encode
from bridge.events import DeadLetter, Event, Order, Quote
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.routing import Router

ROUTER = Router(publish_internal=True)
NOW_NS = 1_777_000_000_000_000_000
DEEP_600 = "[" * 600 + "1" + "]" * 600
DEEP_300 = '{"a":' * 300 + "1" + "}" * 300


def encoded(events: list[Event]) -> list[dict[str, object]]:
    ctx = EnvelopeContext()
    out = []
    for event in events:
        route = ROUTER.route(event)
        assert route is not None
        out.append(orjson.loads(encode(event, route, ctx, NOW_NS).data))
    return out


def test_a_value_nested_600_deep_in_an_unknown_quote_field_is_kept_as_a_flag_and_the_next_quote_encodes() -> None:
    normalizer = Normalizer()
    frame = f'{{"topic":"smd+265598","conid":265598,"31":"1.00","7777":{DEEP_600}}}'.encode()
    (first,) = encoded(normalizer.normalize(frame, NOW_NS))
    assert first["extra"] == {"7777": {"truncated": True, "reason": "value nested deeper than 32 levels",
                                       "bytes": None}}  # fmt: skip
    (second,) = encoded(normalizer.normalize(b'{"topic":"smd+265598","conid":265598,"31":"1.01"}', NOW_NS))
    assert second["values"]["last"] == 1.01  # type: ignore[index]


def test_a_sor_element_with_a_300_deep_field_is_dead_lettered_alone() -> None:
    frame = f'{{"topic":"sor","args":[{{"acct":"A","orderId":1,"x":{DEEP_300}}},{{"acct":"A","orderId":2}}]}}'
    events = Normalizer().normalize(frame.encode(), NOW_NS)
    assert [type(e) for e in events] == [DeadLetter, Order]
    assert encoded(events)[0]["reason"] == "uninterpretable_element"


def test_a_conid_over_64_bits_in_the_topic_target_is_a_dead_letter() -> None:
    events = Normalizer().normalize(b'{"topic":"smd+123456789012345678901234567890","31":"1.00"}', NOW_NS)
    (letter,) = encoded(events)
    assert isinstance(events[0], DeadLetter) and "exceeds 64 bits" in str(letter["error"])


def test_an_out_of_range_account_summary_timestamp_still_encodes() -> None:
    frame = b'{"topic":"ssd+DU1","result":[{"key":"NetLiquidation","timestamp":-9223372036854775807,"monetaryValue":1}]}'
    (event,) = encoded(Normalizer().normalize(frame, NOW_NS))
    assert event["key"] == "NetLiquidation"


def test_a_2_mib_unknown_field_never_makes_later_quotes_large() -> None:
    normalizer = Normalizer()
    frame = b'{"topic":"smd+265598","conid":265598,"31":"1.00","7778":"' + b"x" * (2 << 20) + b'"}'
    (first,) = encoded(normalizer.normalize(frame, NOW_NS))
    assert first["extra"]["7778"]["truncated"] is True  # type: ignore[index]
    events = normalizer.normalize(b'{"topic":"smd+265598","conid":265598,"31":"1.01"}', NOW_NS)
    assert isinstance(events[0], Quote)
    assert len(orjson.dumps(encoded(events)[0])) < 1024


def test_unknown_values_past_the_per_quote_budget_are_dropped_and_counted() -> None:
    normalizer = Normalizer()
    fields = ",".join(f'"x{n}":"{"v" * 3000}"' for n in range(40))
    (quote,) = encoded(normalizer.normalize(f'{{"topic":"smd+1","conid":1,{fields}}}'.encode(), NOW_NS))
    assert len(orjson.dumps(quote["extra"])) <= 32_768
    assert normalizer.dropped_extra_values == 40 - len(quote["extra"])  # type: ignore[arg-type]


def test_the_dead_letter_of_a_huge_frame_carries_its_head_and_its_size() -> None:
    frame = b'{"topic":"sxx+1","v":"' + b"y" * (3 << 20) + b'"}'
    (letter,) = Normalizer().normalize(frame, NOW_NS)
    assert isinstance(letter, DeadLetter)
    assert letter.raw_truncated and letter.raw_bytes == len(frame) and len(letter.raw) <= 65_536


def test_normalize_command_exits_zero_on_frames_the_encoder_once_refused(tmp_path: Path) -> None:
    frames = tmp_path / "hostile.jsonl"
    frames.write_text("\n".join([
        f'{{"topic":"smd+265598","conid":265598,"31":"1.00","7777":{DEEP_600}}}',
        '{"topic":"smd+265598","conid":265598,"31":"1.01"}',
        '{"topic":"smd+123456789012345678901234567890","31":"1.00"}',
        f'{{"topic":"sor","args":[{{"acct":"A","orderId":1,"x":{DEEP_300}}}]}}',
    ]) + "\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "normalize", "--input", str(frames)],
                            capture_output=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert len(result.stdout.splitlines()) == 4


def test_a_large_frame_of_invalid_utf8_is_dead_lettered_as_base64_of_its_head() -> None:
    frame = b'{"topic":"ntf","args":[{"text":"' + b"\xff" * (4 << 20) + b'"}]}'
    (letter,) = Normalizer().normalize(frame, NOW_NS)
    assert isinstance(letter, DeadLetter) and letter.reason == "invalid_utf8"
    assert letter.raw_encoding == "base64" and letter.raw_truncated and letter.raw_bytes == len(frame)


def test_quote_state_is_kept_only_for_subscribed_targets_when_restricted() -> None:
    normalizer = Normalizer()
    normalizer.restrict_to_subscribed()
    normalizer.expect_snapshot("265598")
    (quote,) = normalizer.normalize(b'{"topic":"smd+265598","conid":265598,"31":"1.00"}', NOW_NS)
    assert isinstance(quote, Quote)
    letters = [normalizer.normalize(b'{"topic":"smd+%d","31":"1.00"}' % n, NOW_NS)[0] for n in range(1, 20_001)]
    assert all(isinstance(e, DeadLetter) and e.reason == "unsubscribed_target" for e in letters)
    assert normalizer.quote_states == 1
    normalizer.forget_target("265598")
    (after,) = normalizer.normalize(b'{"topic":"smd+265598","conid":265598,"31":"1.01"}', NOW_NS)
    assert isinstance(after, DeadLetter) and normalizer.quote_states == 0
