"""Client message builders, client message parsing and server frame classification."""

from __future__ import annotations

import orjson
import pytest

from bridge.ingest import wire


def test_smd_sends_field_ids_as_json_strings() -> None:
    assert wire.smd(265598, [31, "84", 86]) == 'smd+265598+{"fields":["31","84","86"]}'


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (wire.umd(265598), "umd+265598+{}"),
        (wire.smh(265598, {"period": "2h", "bar": "5min"}), 'smh+265598+{"period":"2h","bar":"5min"}'),
        (wire.umh("195436"), "umh+195436"),
        (wire.sbd("DU1", 265598, "ISLAND"), "sbd+DU1+265598+ISLAND"),
        (wire.sbd("DU1", 265598), "sbd+DU1+265598"),
        (wire.ubd("DU1"), "ubd+DU1"),
        (wire.sor(), "sor+{}"),
        (wire.sor(["Submitted"]), 'sor+{"filters":["Submitted"]}'),
        (wire.uor(), "uor+{}"),
        (wire.str_(False, 1), 'str+{"realtimeUpdatesOnly":false,"days":1}'),
        (wire.utr(), "utr"),
        (wire.spl(), "spl+{}"),
        (wire.upl(), "upl+{}"),
        (wire.ssd("DU1"), 'ssd+DU1+{"keys":[],"fields":[]}'),
        (wire.usd("DU1"), "usd+DU1+{}"),
        (wire.sld("DU1", ["LedgerListBASE"]), 'sld+DU1+{"keys":["LedgerListBASE"],"fields":[]}'),
        (wire.uld("DU1"), "uld+DU1+{}"),
        (wire.tic(), "tic"),
        (wire.ech_hb(), "ech+hb"),
        (wire.session("bb66"), '{"session":"bb66"}'),
    ],
)
def test_client_messages_follow_the_gateway_grammar(message: str, expected: str) -> None:
    assert message == expected


def test_parse_client_message_splits_verb_targets_and_args() -> None:
    parsed = wire.parse_client_message('smd+265598@NASDAQ+{"fields":["31"]}')
    assert (parsed.verb, parsed.targets, parsed.args) == ("smd", ("265598@NASDAQ",), {"fields": ["31"]})


def test_parse_client_message_accepts_a_missing_args_object() -> None:
    parsed = wire.parse_client_message("sld+DU1")
    assert (parsed.verb, parsed.targets, parsed.args) == ("sld", ("DU1",), None)


def test_parse_client_message_keeps_combo_targets_whole() -> None:
    parsed = wire.parse_client_message('smd+0;;;265598/1,8314/-1+{"fields":["31"]}')
    assert parsed.targets == ("0;;;265598/1,8314/-1",)


@pytest.mark.parametrize(
    ("text", "targets", "args"),
    [
        ('smd+0;;;265598/1,8314/+1+{"fields":["31"]}', ("0;;;265598/1,8314/+1",), {"fields": ["31"]}),
        (
            "smd+28812380;;;783941066/-2,783634289/+1,8314/+3+{}",
            ("28812380;;;783941066/-2,783634289/+1,8314/+3",),
            {},
        ),
        ("umd+0;;;265598/+1,8314/-1+{}", ("0;;;265598/+1,8314/-1",), {}),
        ("umd+0;;;265598/1,8314/+1", ("0;;;265598/1,8314/+1",), None),
    ],
)
def test_parse_client_message_keeps_a_combo_target_whole_when_a_leg_ratio_carries_a_plus_sign(
    text: str, targets: tuple[str, ...], args: dict[str, object] | None
) -> None:
    parsed = wire.parse_client_message(text)
    assert (parsed.verb, parsed.targets, parsed.args) == (text[:3], targets, args)


def test_parse_client_message_still_separates_plain_targets() -> None:
    assert wire.parse_client_message("sbd+DU1+265598+ISLAND").targets == ("DU1", "265598", "ISLAND")


@pytest.mark.parametrize(
    "target", ["265598", "265598@NASDAQ", "0;;;265598/1,8314/-1", "0;;;265598/-1,8314/+2"]
)
def test_every_smd_and_umd_target_parses_back_unchanged(target: str) -> None:
    assert wire.parse_client_message(wire.smd(target, ["31"])).targets == (target,)
    assert wire.parse_client_message(wire.umd(target)).targets == (target,)


def test_an_echoed_combo_topic_keeps_its_signed_target_whole() -> None:
    assert wire.parse_topic("smd+0;;;265598/1,8314/+1") == wire.Topic("md", ("0;;;265598/1,8314/+1",))


def test_session_message_parses_as_the_three_character_topic_the_gateway_sees() -> None:
    parsed = wire.parse_client_message('{"session":"abc"}')
    assert (parsed.verb, parsed.session) == ('{"s', "abc")


@pytest.mark.parametrize(
    ("frame", "kind", "channel"),
    [
        ({"error": "No accounts", "code": 500, "topic": "smd"}, wire.FrameKind.ERROR, None),
        ({"message": "waiting for session"}, wire.FrameKind.CONTROL, None),
        ({"topic": "system", "hb": 1}, wire.FrameKind.SYSTEM, None),
        ({"topic": "sts", "args": {}}, wire.FrameKind.STS, None),
        ({"topic": "act", "args": {}}, wire.FrameKind.ACT, None),
        ({"topic": "blt", "args": {}}, wire.FrameKind.BLT, None),
        ({"topic": "ntf", "args": {}}, wire.FrameKind.NTF, None),
        ({"topic": "tic"}, wire.FrameKind.TIC, None),
        ({"topic": "error", "args": {}}, wire.FrameKind.ERROR, None),
        ({"topic": "smd+265598"}, wire.FrameKind.DATA, "md"),
        ({"topic": "sbd+DU1+265598"}, wire.FrameKind.DATA, "bd"),
        ({"topic": "sor"}, wire.FrameKind.DATA, "or"),
        ({"topic": "xyz"}, wire.FrameKind.UNKNOWN_TOPIC, None),
        ({"topic": 7}, wire.FrameKind.UNKNOWN_TOPIC, None),
    ],
)
def test_frames_are_classified_by_the_reference_precedence(
    frame: dict[str, object], kind: wire.FrameKind, channel: str | None
) -> None:
    got_kind, topic = wire.classify(frame)
    assert got_kind is kind
    assert (topic.channel if topic else None) == channel


def test_binary_and_text_frames_decode_alike() -> None:
    text = '{"topic":"system","hb":1}'
    assert wire.decode_frame(text).obj == wire.decode_frame(text.encode()).obj == {"topic": "system", "hb": 1}


def test_invalid_utf8_byte_is_decoded_as_cp1252_and_the_frame_kept() -> None:
    decoded = wire.decode_frame(b'{"d":"A\x99"}')
    assert decoded.outcome is wire.DecodeOutcome.REPAIRED_UTF8 and decoded.obj == {"d": "A\u2122"}


def test_truncated_json_is_reported_not_raised() -> None:
    decoded = wire.decode_frame(orjson.dumps({"a": 1})[:-1])
    assert decoded.outcome is wire.DecodeOutcome.INVALID_JSON and decoded.obj is None


def test_a_frame_of_invalid_utf8_past_the_repair_bound_is_refused_without_decoding_it_byte_by_byte() -> None:
    frame = b'{"topic":"ntf","args":[{"text":"' + b"\xff" * (4 << 20) + b'"}]}'
    decoded = wire.decode_frame(frame)
    assert decoded.outcome is wire.DecodeOutcome.INVALID_UTF8 and decoded.obj is None
    assert "more than 1024 invalid UTF-8 sequences" in (decoded.error or "")


def test_stray_bytes_up_to_the_repair_bound_are_still_repaired() -> None:
    text = b"\x99 notice " * wire.MAX_REPAIRED_UTF8_ERRORS
    decoded = wire.decode_frame(b'{"topic":"ntf","args":[{"text":"' + text + b'"}]}')
    assert decoded.outcome is wire.DecodeOutcome.REPAIRED_UTF8
    assert decoded.obj is not None and decoded.obj["args"][0]["text"].count("\u2122") == 1024
