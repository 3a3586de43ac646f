"""Event -> Record: the event's JSON (orjson, once) plus CloudEvents 1.0 attributes (pure).

``id`` is deterministic from content, so consumers can dedupe at-least-once
delivery and a record re-published after a gap (``reconciled``) carries the
same id as the live copy of the same state:

- quotes: ``<conid>:<_updated>``, plus ``:<revision>`` for a second, different
  frame in the same millisecond and ``:s`` for a snapshot;
- executions: ``<execution_id>``, and ``<execution_id>:commission`` for the
  copy that adds the commission (an update, not a duplicate);
- orders: account, orderId, status, filled quantity and a digest of the full state;
- summary and ledger rows: account, key, the row's timestamp and a digest;
- everything else (PnL, status, notifications, lifecycle, dead letters): the type,
  the event time and a digest, so a state that returns to an earlier value later
  is a new event, not a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from bridge.events import (
    AccountLedger,
    AccountSummary,
    Bars,
    BookLadder,
    Event,
    Execution,
    Order,
    Quote,
)
from bridge.routing import Route
from bridge.sinks.base import Record

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
SCHEMA_BASE = "urn:ibkr-bridge:schema:"
_IGNORED_IN_DIGEST = {"changed", "reconciled", "snapshot"}


def _digest(event: Event) -> str:
    names = event.__dataclass_fields__
    state = {k: getattr(event, k) for k in names if k not in _IGNORED_IN_DIGEST}
    return hashlib.blake2b(orjson.dumps(state, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def _quote_id(event: Event) -> str:
    assert isinstance(event, Quote)
    text = f"{event.conid}:{event.updated_ms}"
    if event.revision:
        text = f"{text}:{event.revision}"
    return f"{text}:s" if event.snapshot else text


def _execution_id(event: Event) -> str:
    assert isinstance(event, Execution)
    return event.execution_id if event.commission is None else f"{event.execution_id}:commission"


def _order_id(event: Event) -> str:
    assert isinstance(event, Order)
    return f"{event.account}:{event.order_id}:{event.status}:{event.filled_quantity}:{_digest(event)}"


def _summary_id(event: Event) -> str:
    assert isinstance(event, AccountSummary | AccountLedger)
    return f"{event.account}:{event.key}:{event.timestamp_ms}:{_digest(event)}"


def _conid_digest(event: Event) -> str:
    assert isinstance(event, BookLadder | Bars)
    return f"{event.conid}:{_digest(event)}"


_ID_OF: dict[type[Event], Callable[[Event], str]] = {
    Quote: _quote_id,
    Execution: _execution_id,
    Order: _order_id,
    AccountSummary: _summary_id,
    AccountLedger: _summary_id,
    BookLadder: _conid_digest,
    Bars: _conid_digest,
}


def event_id(event: Event, time_ms: int) -> str:
    id_of = _ID_OF.get(type(event))
    return id_of(event) if id_of is not None else f"{type(event).__name__.lower()}:{time_ms}:{_digest(event)}"


_TIME_FIELDS = ("updated_ms", "timestamp_ms", "trade_time_ms", "at_ms")


def event_time_ms(event: Event, received_ns: int) -> int:
    """The event's own time where the gateway gives one, else when the bridge received it."""
    for name in _TIME_FIELDS:
        value = getattr(event, name, None)
        if type(value) is int:
            return value
    return received_ns // 1_000_000


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class EnvelopeContext:
    """Per-bridge envelope state: the source, the gateway session epoch, a sequence counter."""

    source: str = "urn:ibkr-bridge:gateway"
    session_epoch: int = 0
    sequence: int = 0
    _last_ms: int = -1
    _last_time: str = ""

    def time_text(self, ms: int) -> str:
        if ms != self._last_ms:
            self._last_ms = ms
            self._last_time = _rfc3339(ms)
        return self._last_time


def encode(event: Event, route: Route, ctx: EnvelopeContext, received_ns: int) -> Record:
    """Encode one event, once, into the record its sink will publish."""
    ctx.sequence += 1
    time_ms = event_time_ms(event, received_ns)
    attributes: tuple[tuple[str, str | int], ...] = (
        ("specversion", SPEC_VERSION),
        ("id", event_id(event, time_ms)),
        ("source", ctx.source),
        ("type", event.TYPE),
        ("time", ctx.time_text(time_ms)),
        ("subject", route.key.decode()),
        ("datacontenttype", CONTENT_TYPE),
        ("dataschema", SCHEMA_BASE + event.TYPE),
        ("sessionepoch", ctx.session_epoch),
        ("sequence", ctx.sequence),
    )
    return Record(
        destination=route.destination,
        key=route.key,
        data=orjson.dumps(event),
        attributes=attributes,
        event_class=event.CLASS,
        event_type=event.TYPE,
        updated_ms=time_ms,
    )


def decode_structured(line: bytes | str) -> tuple[dict[str, object], dict[str, object]]:
    """Split a structured-mode envelope into (attributes, data)."""
    envelope = orjson.loads(line)
    data = envelope.pop("data")
    return envelope, data
