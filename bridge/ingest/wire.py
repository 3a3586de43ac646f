"""The gateway websocket's wire grammar (pure): client message builders,
client message parsing (for the simulator) and server frame classification.

Client -> server: ``TOPIC+TARGET…+{JSON}`` (reference §1.5). Server -> client:
one JSON object per websocket message, routed by, in order: an ``error`` key;
no ``topic`` (control frame); an unsolicited topic (``system``, ``sts``,
``act``, ``blt``, ``ntf``, ``tic``, ``error``); a data topic echoing the
subscribe verb and its targets (``smd+265598``, ``sor``, ``sbd+DU1+265598``).
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# ------------------------------------------------------------------------------------------ targets

COMBO_SEPARATOR = ";;;"


def is_combo(target: str) -> bool:
    """``28812380;;;265598/1,8314/-1``: a spread conid, then legs ``<conid>/<signed ratio>``."""
    return COMBO_SEPARATOR in target


def market_data_target(text: str) -> str:
    """Check an ``smd`` target: ``CONID``, ``CONID@EXCHANGE`` or a combo (reference §2.1).

    Returns it unchanged (the gateway echoes it verbatim, and it is the combo's key); raises
    ValueError saying what is allowed.
    """
    if is_combo(text):
        spread, _, legs = text.partition(COMBO_SEPARATOR)
        if spread.isdigit() and legs and all(_is_leg(leg) for leg in legs.split(",")):
            return text
        raise ValueError(
            f"combo {text!r}: expected SPREAD_CONID;;;CONID/RATIO,CONID/RATIO... "
            "(e.g. 28812380;;;265598/1,8314/-1; the ratio's sign is the side)"
        )
    conid, at, exchange = text.partition("@")
    if conid.isdigit() and (not at or exchange.replace(".", "").isalnum()):
        return text
    raise ValueError(
        f"market data target {text!r}: expected CONID, CONID@EXCHANGE or a combo "
        "SPREAD_CONID;;;CONID/RATIO,... (e.g. 265598, 265598@NASDAQ, 28812380;;;265598/1,8314/-1)"
    )


def _is_leg(leg: str) -> bool:
    conid, slash, ratio = leg.partition("/")
    return conid.isdigit() and bool(slash) and ratio.lstrip("+-").isdigit() and int(ratio) != 0


def split_market_data_targets(text: str) -> list[str]:
    """``265598,28812380;;;265598/1,8314/-1`` -> ['265598', '28812380;;;265598/1,8314/-1']: a comma
    separates targets, except before a combo's next leg (a piece with a ``/``)."""
    targets: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "/" in piece and targets and is_combo(targets[-1]) and not is_combo(piece):
            targets[-1] += "," + piece
        else:
            targets.append(piece)
    return targets


# ------------------------------------------------------------------------------------------ builders


def _args(args: Mapping[str, Any] | None) -> str:
    return orjson.dumps(dict(args or {})).decode()


def smd(target: int | str, fields: Iterable[str | int]) -> str:
    """Subscribe market data; field ids must travel as JSON strings."""
    return f"smd+{target}+" + _args({"fields": [str(f) for f in fields]})


def umd(target: int | str) -> str:
    return f"umd+{target}+{{}}"


def smh(conid: int | str, params: Mapping[str, Any] | None = None) -> str:
    return f"smh+{conid}+" + _args(params)


def umh(server_id: str) -> str:
    return f"umh+{server_id}"


def sbd(account: str, conid: int | str, exchange: str | None = None) -> str:
    return f"sbd+{account}+{conid}" + (f"+{exchange}" if exchange else "")


def ubd(account: str) -> str:
    return f"ubd+{account}"


def sor(filters: list[str] | None = None) -> str:
    return "sor+" + _args({"filters": filters} if filters else None)


def uor() -> str:
    return "uor+{}"


def str_(realtime_updates_only: bool | None = None, days: int | None = None) -> str:
    args: dict[str, Any] = {}
    if realtime_updates_only is not None:
        args["realtimeUpdatesOnly"] = realtime_updates_only
    if days is not None:
        args["days"] = days
    return "str+" + _args(args)


def utr() -> str:
    return "utr"


def spl() -> str:
    return "spl+{}"


def upl() -> str:
    return "upl+{}"


def ssd(account: str, keys: list[str] | None = None, fields: list[str] | None = None) -> str:
    return f"ssd+{account}+" + _args({"keys": keys or [], "fields": fields or []})


def usd(account: str) -> str:
    return f"usd+{account}+{{}}"


def sld(account: str, keys: list[str] | None = None, fields: list[str] | None = None) -> str:
    return f"sld+{account}+" + _args({"keys": keys or [], "fields": fields or []})


def uld(account: str) -> str:
    return f"uld+{account}+{{}}"


def tic() -> str:
    return "tic"


def ech_hb() -> str:
    return "ech+hb"


def session(session_id: str) -> str:
    return orjson.dumps({"session": session_id}).decode()


# ---------------------------------------------------------------------------------- client parsing


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A parsed client message: ``verb`` (3 chars), ``targets`` and the JSON ``args`` (or None)."""

    verb: str
    targets: tuple[str, ...]
    args: dict[str, Any] | None
    session: str | None = None

    @property
    def target(self) -> str | None:
        return self.targets[0] if self.targets else None


def _targets(pieces: list[str]) -> list[str]:
    """Targets from the ``+``-separated pieces after the verb.

    ``+`` also stands inside a target: a combo leg's ratio may carry an explicit sign
    (``0;;;265598/1,8314/+1``, reference §2.1), so a piece that follows one ending in
    ``/`` continues that target.
    """
    targets: list[str] = []
    for piece in pieces:
        if targets and targets[-1].endswith("/"):
            targets[-1] += "+" + piece
        else:
            targets.append(piece)
    return targets


def parse_client_message(text: str) -> ClientMessage:
    """Parse ``TOPIC+TARGET…+{JSON}``; tolerant of a missing ``{}``.

    A ``{"session": …}`` message parses with ``verb`` '{"s' (the gateway takes the
    first three characters as the topic) and ``session`` set.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            return ClientMessage(text[:3], (), None)
        sid = obj.get("session")
        return ClientMessage(text[:3], (), obj, sid if isinstance(sid, str) else None)
    brace = text.find("+{")
    head, body = (text, None) if brace < 0 else (text[:brace], text[brace + 1 :])
    parts = head.split("+")
    args: dict[str, Any] | None = None
    if body is not None:
        try:
            parsed = orjson.loads(body)
            args = parsed if isinstance(parsed, dict) else None
        except orjson.JSONDecodeError:
            args = None
    return ClientMessage(parts[0][:3], tuple(t for t in _targets(parts[1:]) if t), args)


# --------------------------------------------------------------------------------- server frames


MAX_REPAIRED_UTF8_ERRORS = 1024  # invalid UTF-8 sequences repaired in one frame; past it, a dead letter


class _TooManyInvalid(Exception):
    pass


class _Cp1252Fallback:
    """Decode bytes that are not valid UTF-8 as cp1252 (IBKR's stray 0x99 is '™').

    The codec calls this once per invalid sequence, from Python: about a microsecond each. The
    decoder stays linear and fast because the calls are bounded: past
    ``MAX_REPAIRED_UTF8_ERRORS`` in one frame it gives up (a frame of 0xFF bytes is not text that
    a stray byte spoiled) and the frame is dead-lettered without being decoded further."""

    def __init__(self) -> None:
        self.errors = 0

    def __call__(self, exc: UnicodeError) -> tuple[str, int]:
        assert isinstance(exc, UnicodeDecodeError)
        self.errors += 1
        if self.errors > MAX_REPAIRED_UTF8_ERRORS:
            raise _TooManyInvalid
        bad = exc.object[exc.start : exc.end]
        return bad.decode("cp1252", errors="replace"), exc.end


_cp1252_fallback = _Cp1252Fallback()
codecs.register_error("ibkr-cp1252", _cp1252_fallback)


def repair_utf8(raw: bytes) -> str | None:
    """``raw`` decoded as UTF-8 with each invalid sequence read as cp1252; None past
    ``MAX_REPAIRED_UTF8_ERRORS`` invalid sequences."""
    _cp1252_fallback.errors = 0
    try:
        return raw.decode("utf-8", errors="ibkr-cp1252")
    except _TooManyInvalid:
        return None


class DecodeOutcome(enum.StrEnum):
    OK = "ok"
    REPAIRED_UTF8 = "repaired_utf8"  # invalid UTF-8 bytes decoded as cp1252; frame still used
    INVALID_UTF8 = "invalid_utf8"  # more invalid UTF-8 than a stray byte or two: not decoded
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"


@dataclass(frozen=True, slots=True)
class Decoded:
    outcome: DecodeOutcome
    obj: dict[str, Any] | None
    error: str | None = None


def decode_frame(data: bytes | str) -> Decoded:
    """Decode one websocket message (text or binary opcode) into a JSON object, never raising."""
    try:
        obj = orjson.loads(data)
        outcome = DecodeOutcome.OK
    except orjson.JSONDecodeError as exc:
        if not isinstance(data, bytes | bytearray | memoryview):
            return Decoded(DecodeOutcome.INVALID_JSON, None, str(exc))
        raw = bytes(data)
        try:
            raw.decode("utf-8")
            return Decoded(DecodeOutcome.INVALID_JSON, None, str(exc))
        except UnicodeDecodeError:
            pass
        text = repair_utf8(raw)
        if text is None:
            error = f"more than {MAX_REPAIRED_UTF8_ERRORS} invalid UTF-8 sequences in {len(raw)} bytes"
            return Decoded(DecodeOutcome.INVALID_UTF8, None, error)
        try:
            obj = orjson.loads(text.encode("utf-8"))  # orjson reads bytes faster than a wide str
        except orjson.JSONDecodeError as exc2:
            return Decoded(DecodeOutcome.INVALID_JSON, None, str(exc2))
        outcome = DecodeOutcome.REPAIRED_UTF8
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        return Decoded(DecodeOutcome.NOT_AN_OBJECT, None, f"frame is a JSON {kind}, not an object")
    return Decoded(outcome, obj)


class FrameKind(enum.StrEnum):
    ERROR = "error"
    CONTROL = "control"
    SYSTEM = "system"
    STS = "sts"
    ACT = "act"
    BLT = "blt"
    NTF = "ntf"
    TIC = "tic"
    DATA = "data"
    UNKNOWN_TOPIC = "unknown_topic"


UNSOLICITED: dict[str, FrameKind] = {
    "system": FrameKind.SYSTEM,
    "sts": FrameKind.STS,
    "act": FrameKind.ACT,
    "blt": FrameKind.BLT,
    "ntf": FrameKind.NTF,
    "tic": FrameKind.TIC,
    "error": FrameKind.ERROR,
}

DATA_CHANNELS = frozenset({"md", "mh", "bd", "or", "tr", "pl", "sd", "ld"})


@dataclass(frozen=True, slots=True)
class Topic:
    """A data topic: ``channel`` ('md', 'or', ...) and the echoed targets."""

    channel: str
    targets: tuple[str, ...]

    @property
    def target(self) -> str | None:
        return self.targets[0] if self.targets else None


def parse_topic(topic: str) -> Topic | None:
    """``smd+265598`` -> Topic('md', ('265598',)); None when it is not a known data topic.

    A combo echo keeps its target whole: ``smd+0;;;265598/1,8314/+1`` -> ('0;;;265598/1,8314/+1',).
    """
    parts = topic.split("+")
    verb = parts[0]
    parsed = None
    if len(verb) == 3 and verb[0] == "s" and verb[1:] in DATA_CHANNELS:
        parsed = Topic(verb[1:], tuple(_targets(parts[1:])))
    return parsed


def classify(obj: Mapping[str, Any]) -> tuple[FrameKind, Topic | None]:
    """Route a decoded frame by the precedence rules of reference §1.5."""
    if "error" in obj:
        return FrameKind.ERROR, None
    topic = obj.get("topic")
    if topic is None:
        return FrameKind.CONTROL, None
    if not isinstance(topic, str):
        return FrameKind.UNKNOWN_TOPIC, None
    kind = UNSOLICITED.get(topic)
    if kind is not None:
        return kind, None
    parsed = parse_topic(topic)
    if parsed is None:
        return FrameKind.UNKNOWN_TOPIC, None
    return FrameKind.DATA, parsed
