"""Dead letters that can always be delivered (pure): the raw bytes, cut to a bound, with their size.

A dead letter carries the frame or record it stands for, but never so much of it that the
sink refuses the dead letter too (Redis' 512 MiB value and Kafka's ``max.request.size`` are far
larger than ``MAX_DEAD_LETTER_RAW_BYTES``): ``raw_bytes`` says how large the original was and
``raw_truncated`` that ``raw`` holds only its head.
"""

from __future__ import annotations

import base64
import reprlib
from collections.abc import Callable
from typing import Any

import orjson

from bridge.events import DeadLetter, Event

MAX_DEAD_LETTER_RAW_BYTES = 65_536  # of a raw frame kept in a dead letter: it must stay deliverable


def raw_text(data: bytes | str, limit: int = MAX_DEAD_LETTER_RAW_BYTES) -> tuple[str, str]:
    """The raw frame for a dead letter: (text, "utf-8") or (base64, "base64"), at most ``limit``
    bytes of it (see :func:`dead_letter`, which records the frame's full size)."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: not writable as UTF-8, kept as its bytes
            return raw_text(data.encode("utf-8", "surrogatepass"), limit)
        return (data, "utf-8") if len(data) <= limit // 4 else raw_text(data.encode("utf-8"), limit)
    raw = bytes(data[:limit]) if len(data) > limit else bytes(data)
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if len(data) > limit and exc.start >= len(raw) - 3:  # the cut split a character
            return raw[: exc.start].decode("utf-8", "replace"), "utf-8"
        return base64.b64encode(raw).decode("ascii"), "base64"


def dead_letter(
    data: bytes | str, received_ns: int | None, reason: str, error: str | None, topic: Any = None,
    stage: str = "normalize",
) -> DeadLetter:
    """A dead letter for ``data``, small enough to deliver whatever the frame's size."""
    text, encoding = raw_text(data)
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    return DeadLetter(
        reason=reason,
        stage=stage,
        raw=text,
        raw_encoding=encoding,
        received_ns=received_ns,
        topic=topic if isinstance(topic, str) else None,
        error=error[:1024] if error else error,
        raw_bytes=size,
        raw_truncated=size > MAX_DEAD_LETTER_RAW_BYTES,
    )  # fmt: skip


_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxlong = 4, 16, 16, 64
_REPR.maxstring = _REPR.maxother = 256


def unencodable(event: Event, error: Exception, received_ns: int | None) -> DeadLetter:
    """The dead letter for an event its encoder refused: the error, and each field of the event
    as a bounded ``repr`` (the event itself is what could not be written as JSON)."""
    fields = {name: _REPR.repr(getattr(event, name)) for name in event.__dataclass_fields__}
    raw = orjson.dumps({"type": event.TYPE, "fields": fields})
    return dead_letter(raw, received_ns, "unencodable", repr(error), None, stage="encode")


def error_text(exc: BaseException, text: Callable[[object], str] = repr) -> str:
    """``text(exc)`` (``repr`` or ``str``), bounded: the exception may hold a value nested too
    deep for either, or far too long for a dead letter."""
    try:
        return text(exc)[:1024]
    except RecursionError:
        args = ", ".join(_REPR.repr(arg) for arg in exc.args[:3])
        return f"{type(exc).__name__}({args})"
