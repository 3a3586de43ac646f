"""Merged quote state and the pure helpers that fill it (bounded unknown values, identity keys,
the last price's flags, the subscribed-target check)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.events import MarketDataAvailability, Scalar
from bridge.ingest import bounds, wire
from bridge.ingest.fields import AvailabilityCodes, Unparsed, to_text


@dataclass(slots=True)
class QuoteState:
    values: dict[str, Scalar] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_bytes: int = 0  # JSON bytes of ``extra``, at least (see bounds.MAX_EXTRA_BYTES)
    conid_ex: str | None = None
    server_id: str | None = None
    updated_ms: int | None = None
    revision: int = 0
    last_is_prior_close: bool = False
    halted: bool = False
    availability: MarketDataAvailability | None = None
    snapshot_pending: bool = True
    combo: str | None = None  # the combo target (``conid;;;leg/ratio,...``) this state belongs to
    by_conid_ex: bool = False  # a topic shared by combos: each frame's conidEx names its combo



class NotSubscribed(Exception):
    """A quote frame for a target no ``smd`` was sent for (see ``Normalizer.restrict_to_subscribed``)."""


def check_subscribed(subscribed: set[str] | None, target: str, conid_ex: Any) -> None:
    """Refuse a new state for a target (or, for a combo echoed by its spread conid, a ``conidEx``)
    that no ``smd`` was sent for; ``subscribed`` None: every target is kept."""
    if subscribed is not None and target not in subscribed and conid_ex not in subscribed:
        raise NotSubscribed(f"no market data subscription for target {target[:64]!r}")


def keep_extra(state: QuoteState, key: str, raw: Any, changed: list[str]) -> int:
    """Keep an unknown (or unparsable) value in the quote's ``extra``, bounded: a value nested
    too deep or too large is kept as a truncation flag (``bounds.bounded_extra``); past
    ``bounds.MAX_EXTRA_BYTES`` per quote, a new value is dropped: returns 1 then (for a count), else 0."""
    value, size = bounds.bounded_extra(raw)
    extra = state.extra
    if state.extra_bytes + size > bounds.MAX_EXTRA_BYTES:
        extra.pop(key, None)
        state.extra_bytes = len(orjson.dumps(extra))  # exact again (replaced values counted twice)
        if state.extra_bytes + size > bounds.MAX_EXTRA_BYTES:
            changed.append(key)
            return 1
    extra[key] = value
    state.extra_bytes += size
    changed.append(key)
    return 0


def last_flags(state: QuoteState, prefix: str, changed: list[str]) -> None:
    """The last price's C (prior close) or H (halted) prefix, as the quote's two flags."""
    prior_close, halted = prefix == "C", prefix == "H"
    if prior_close != state.last_is_prior_close:
        state.last_is_prior_close = prior_close
        changed.append("last_is_prior_close")
    if halted != state.halted:
        state.halted = halted
        changed.append("halted")


def merge_identity(
    state: QuoteState, obj: dict[str, Any], changed: list[str], decode: AvailabilityCodes
) -> None:
    """The identity keys of a quote frame: conidEx, the server id and the availability (6509)."""
    conid_ex = obj.get("conidEx")
    if conid_ex is not None and conid_ex != state.conid_ex:
        text = to_text(conid_ex)
        # A combo keeps its full target when the echoed conidEx does not name the legs.
        state.conid_ex = text if state.combo is None or (text and wire.is_combo(text)) else state.combo
    server_id = obj.get("server_id", obj.get("6119"))
    if server_id is not None and server_id != state.server_id:
        state.server_id = to_text(server_id) or state.server_id
    if "6509" in obj:
        availability = decode(obj["6509"])
        if availability != state.availability:
            state.availability = availability
            changed.append("availability")


def conid_from_target(target: str) -> int:
    head = target.split("@", 1)[0].split(";", 1)[0]
    if not head.isdigit():
        return 0
    conid = int(head)
    if not bounds.in_int_range(conid):
        raise Unparsed(f"conid {head[:40]} in topic target exceeds 64 bits")
    return conid
