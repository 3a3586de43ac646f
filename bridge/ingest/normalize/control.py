"""Session and unsolicited frames -> events (pure): error frames, topic-less control
frames, ``system``, ``sts``, ``tic``, ``ntf`` and ``blt`` (reference §1.6, §3).

Each function takes the decoded frame and returns its events, raising
:class:`~bridge.ingest.normalize.trading.ElementError` (or ``Unparsed``) for a frame it
cannot interpret; the normalizer turns that into a dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from bridge.events import (
    AuthStatus,
    Bulletin,
    Control,
    ControlKind,
    Event,
    GatewayErrorMessage,
    Heartbeat,
    Notification,
    SystemLogin,
    TickleReply,
)
from bridge.ingest.fields import ElementError, Unparsed, to_bool, to_int, to_text

_STS_KEYS = ("authenticated", "competing", "connected", "established")
_STS_TEXT = {"message": "message", "fail": "fail", "serverName": "server_name",
             "serverVersion": "server_version", "username": "username"}  # fmt: skip
_NOTIFICATION_KEYS = ("id", "text", "title", "url")


def as_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ElementError(f"expected an object, got {type(value).__name__}")
    return value


def error(obj: dict[str, Any]) -> list[Event]:
    """An ``error`` key, or the ``error`` topic with its message in ``args``."""
    if "error" in obj:
        message, code = obj["error"], obj.get("code", obj.get("statusCode"))
    else:
        args = obj.get("args")
        message = args.get("message", args) if isinstance(args, Mapping) else args
        code = args.get("code") if isinstance(args, Mapping) else None
    text = message if isinstance(message, str) else orjson.dumps(message).decode()
    extra = {k: v for k, v in obj.items() if k not in ("error", "code", "statusCode", "topic")}
    try:
        code_number = to_int(code)
    except Unparsed:
        code_number, extra["code"] = None, code
    topic = obj.get("topic")
    return [GatewayErrorMessage(text, code_number, topic if isinstance(topic, str) else None, extra)]


def control(obj: dict[str, Any]) -> list[Event]:
    """A topic-less frame: a ``message`` or a ``result`` (reference §3.7)."""
    message = obj.get("message")
    if isinstance(message, str):
        if message == "waiting for session":
            return [Control(ControlKind.WAITING_FOR_SESSION, None, text=message)]
        if message.startswith("Unsubscribed"):
            server_id = message.partition(" ")[2] or None
            return [Control(ControlKind.UNSUBSCRIBED, None, text=message, server_id=server_id)]
        return [Control(ControlKind.MESSAGE, None, text=message)]
    result = obj.get("result")
    if isinstance(result, str):
        return [Control(ControlKind.RESULT, None, text=result)]
    raise ElementError("topic-less frame with neither message nor result")


def system(obj: dict[str, Any]) -> list[Event]:
    """A heartbeat, the login success frame, or a system message."""
    if "hb" in obj:
        return [Heartbeat(to_int(obj["hb"]))]
    success = obj.get("success")
    if isinstance(success, str):
        return [SystemLogin(success, to_bool(obj.get("isFT")), to_bool(obj.get("isPaper")))]
    message = obj.get("message")
    if isinstance(message, str):
        return [Control(ControlKind.MESSAGE, "system", text=message)]
    raise ElementError("system frame with neither hb nor success")


def sts(obj: dict[str, Any]) -> list[Event]:
    """Brokerage authentication status; absent flags stay unknown (None)."""
    args = as_object(obj.get("args"))
    flags = {k: to_bool(args[k]) for k in _STS_KEYS if k in args}
    texts = {name: to_text(args[k]) for k, name in _STS_TEXT.items() if k in args}
    return [AuthStatus(**flags, **texts)]  # type: ignore[arg-type]


def tic(obj: dict[str, Any], previous_last_accessed: Any) -> list[Event]:
    """A ``tic`` reply; the repeats of one reply (same ``lastAccessed``) are duplicates."""
    last = obj.get("lastAccessed")
    if last is not None and last == previous_last_accessed:
        return [Control(ControlKind.DUPLICATE, "tic")]
    return [TickleReply(to_bool(obj.get("alive")), to_text(obj.get("id")), to_int(last))]


def notification(obj: dict[str, Any]) -> list[Event]:
    events: list[Event] = []
    for item in _items(obj):
        extra = {k: v for k, v in item.items() if k not in _NOTIFICATION_KEYS}
        texts = [_text_or_none(item.get(k)) for k in _NOTIFICATION_KEYS]
        events.append(Notification(texts[0], texts[1], texts[2], texts[3], extra))
    return events


def bulletin(obj: dict[str, Any]) -> list[Event]:
    events: list[Event] = []
    for item in _items(obj):
        extra = {k: v for k, v in item.items() if k not in ("id", "message")}
        events.append(Bulletin(_text_or_none(item.get("id")), _text_or_none(item.get("message")), extra))
    return events


def _items(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """``args`` as a list of objects (a single object counts as a list of one)."""
    args = obj.get("args")
    return [as_object(item) for item in (args if isinstance(args, list) else [args])]


def _text_or_none(value: Any) -> str | None:
    try:
        return to_text(value)
    except Unparsed:
        return orjson.dumps(value).decode()
