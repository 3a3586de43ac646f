"""Event -> Record: the event's JSON (orjson, once) plus CloudEvents 1.0 attributes (pure).

``id`` is deterministic from content, so consumers can dedupe at-least-once
delivery and a record re-published after a gap (``reconciled``) carries the
same id as the live copy of the same state:

- quotes: ``<conid>:<_updated>`` (a combo: ``<full target>:<_updated>``), plus
  ``:<revision>`` for a second, different frame in the same millisecond and ``:s``
  for a snapshot;
- executions: ``<execution_id>``, and ``<execution_id>:commission`` for the
  copy that adds the commission (an update, not a duplicate);
- orders: account, orderId, status, filled quantity and a digest of the full state;
- summary and ledger rows: account, key, the row's timestamp and a digest;
- everything else (PnL, status, notifications, lifecycle, dead letters): the type,
  the event time and a digest, so a state that returns to an earlier value later
  is a new event, not a duplicate.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.events import (
    EVENT_TYPE_BY_NAME,
    AccountLedger,
    AccountSummary,
    Bars,
    BookLadder,
    Event,
    Execution,
    GatewayErrorMessage,
    MarketDataAvailability,
    Order,
    Quote,
)
from bridge.quote_fast import quote_fields
from bridge.routing import Route, quote_key
from bridge.sinks.base import Record

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
SCHEMA_BASE = "urn:ibkr-bridge:schema:"
_IGNORED_IN_DIGEST = {"changed", "reconciled", "snapshot"}


def _digest(event: Event) -> str:
    names = event.__dataclass_fields__
    state = {k: getattr(event, k) for k in names if k not in _IGNORED_IN_DIGEST}
    return hashlib.blake2b(orjson.dumps(state, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def _quote_id(event: Event, key: str | None = None) -> str:
    """``key`` is the quote's routing key (``quote_key``: the conid, a combo's full target)."""
    assert isinstance(event, Quote)
    text = f"{quote_key(event) if key is None else key}:{event.updated_ms}"
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


# The default id starts with the class name in lower case; an event class renamed since keeps its
# published prefix here, so its ids (which consumers dedupe by) do not change.
_ID_PREFIX: dict[type[Event], str] = {GatewayErrorMessage: "gatewayerror"}


def event_id(event: Event, time_ms: int) -> str:
    cls = type(event)
    id_of = _ID_OF.get(cls)
    if id_of is not None:
        return id_of(event)
    return f"{_ID_PREFIX.get(cls) or cls.__name__.lower()}:{time_ms}:{_digest(event)}"


_TIME_FIELDS = ("updated_ms", "timestamp_ms", "trade_time_ms", "at_ms")
_MAX_TIME_MS = 32_503_680_000_000  # year 3000: a gateway time beyond it is garbage, not a time


def event_time_ms(event: Event, received_ns: int) -> int:
    """The event's own time where the gateway gives a plausible one, else when the bridge received it."""
    for name in _TIME_FIELDS:
        value = getattr(event, name, None)
        if type(value) is int and 0 <= value < _MAX_TIME_MS:
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
    _second: int = -1
    _second_text: str = ""
    _ms: int = -1
    _ms_text: str = ""
    _constants: dict[type[Event], tuple[tuple[str, str | int], ...]] = dataclasses.field(default_factory=dict)
    _constants_epoch: int = -1
    # The last availability serialized and its JSON: the normalizer shares one object per 6509 code
    # (fields.AvailabilityCodes), so consecutive quotes nearly always carry the same one.
    _availability: object = None
    _availability_fragment: orjson.Fragment | None = None
    # id -> (the availability object itself, its JSON); keeping the object makes the id unambiguous.
    _availability_cache: dict[int, tuple[object, orjson.Fragment]] = dataclasses.field(default_factory=dict)

    def constant_attributes(self, cls: type[Event]) -> tuple[tuple[str, str | int], ...]:
        """specversion, then source, type, datacontenttype, dataschema, sessionepoch (cached per type)."""
        if self._constants_epoch != self.session_epoch:
            self._constants.clear()
            self._constants_epoch = self.session_epoch
        constant = self._constants.get(cls)
        if constant is None:
            constant = self._constants[cls] = (
                ("specversion", SPEC_VERSION),
                ("source", self.source),
                ("type", cls.TYPE),
                ("datacontenttype", CONTENT_TYPE),
                ("dataschema", SCHEMA_BASE + cls.TYPE),
                ("sessionepoch", self.session_epoch),
            )
        return constant

    def time_text(self, ms: int) -> str:
        """RFC 3339 UTC with milliseconds; the date-time part is formatted once per second."""
        if ms == self._ms:  # a burst of frames shares the millisecond
            return self._ms_text
        self._ms = ms
        second, millis = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._second_text = _rfc3339(second * 1000)[:-5]
        self._ms_text = text = self._second_text + _MILLIS_TEXT[millis]
        return text


    def availability_json(self, availability: MarketDataAvailability) -> orjson.Fragment:
        """The availability's JSON, serialized once per object (a pure function of its 6509 code,
        shared by every quote of a conid)."""
        if availability is self._availability and self._availability_fragment is not None:
            return self._availability_fragment
        cached = self._availability_cache.get(id(availability))
        if cached is not None and cached[0] is availability:
            fragment = cached[1]
        else:
            fragment = orjson.Fragment(orjson.dumps(availability))
            if len(self._availability_cache) >= 4096:
                self._availability_cache.clear()
            self._availability_cache[id(availability)] = (availability, fragment)
        self._availability, self._availability_fragment = availability, fragment
        return fragment


_MILLIS_TEXT = tuple(f".{millis:03d}Z" for millis in range(1000))  # a concatenation, not a format, per ms


def encode(event: Event, route: Route, ctx: EnvelopeContext, received_ns: int) -> Record:
    """Encode one event, once, into the record its sink will publish."""
    if type(event) is Quote:
        return encode_quote(event, route, ctx, received_ns)
    ctx.sequence += 1
    time_ms = event_time_ms(event, received_ns)
    cls = type(event)
    subject = route.subject or route.key.decode()
    tail = (event_id(event, time_ms), ctx.time_text(time_ms), subject, ctx.sequence)
    return Record.enveloped(
        route.destination, route.key, orjson.dumps(event), ctx.constant_attributes(cls), tail, cls.CLASS,
        cls.TYPE, time_ms,
    )  # fmt: skip


def encode_quote(quote: Quote, route: Route, ctx: EnvelopeContext, received_ns: int) -> Record:
    """``encode`` for the bulk of the traffic: the quote's JSON built from its fields with the
    availability serialized once per object (see :meth:`EnvelopeContext.availability_json`)."""
    ctx.sequence = sequence = ctx.sequence + 1
    time_ms = quote.updated_ms
    if time_ms is None or not 0 <= time_ms < _MAX_TIME_MS:
        time_ms = received_ns // 1_000_000
    fields = quote_fields(quote)
    availability = quote.availability
    if availability is not None:
        fields["availability"] = ctx.availability_json(availability)
    subject = route.subject or route.key.decode()
    tail = (_quote_id(quote, subject), ctx.time_text(time_ms), subject, sequence)
    return Record.enveloped(
        route.destination, route.key, orjson.dumps(fields), ctx.constant_attributes(Quote), tail,
        _MARKET_DATA, _QUOTE_TYPE, time_ms,
    )  # fmt: skip


_MARKET_DATA = Quote.CLASS
_QUOTE_TYPE = Quote.TYPE


def decode_structured(line: bytes | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a structured-mode envelope into (attributes, data)."""
    envelope = orjson.loads(line)
    data = envelope.pop("data")
    return envelope, data


def decode_event(event_type: str, data: bytes | Mapping[str, Any]) -> Event:
    """Rebuild the event dataclass from its JSON ``data`` (consumers, tools and round-trip tests)."""
    cls = EVENT_TYPE_BY_NAME[event_type]
    fields = orjson.loads(data) if isinstance(data, bytes | str) else data
    return _build(cls, fields)  # type: ignore[no-any-return]


def _build(cls: type[Any], fields: Mapping[str, Any]) -> Any:
    hints = _HINTS[cls]
    return cls(**{name: _convert(hints[name], value) for name, value in fields.items()})


def _hints_table(roots: tuple[type[Any], ...]) -> Mapping[type[Any], Mapping[str, Any]]:
    """The type hints of every event class and of the dataclasses nested in them, resolved once at
    import: a read-only table, no cache filled at run time."""
    table: dict[type[Any], Mapping[str, Any]] = {}
    todo = list(roots)
    while todo:
        cls = todo.pop()
        if cls not in table:
            table[cls] = hints = types.MappingProxyType(typing.get_type_hints(cls))
            todo += [t for hint in hints.values() for t in _dataclasses_in(hint)]
    return types.MappingProxyType(table)


def _dataclasses_in(hint: Any) -> list[type[Any]]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [hint]
    return [t for arg in typing.get_args(hint) for t in _dataclasses_in(arg)]


_HINTS = _hints_table(tuple(EVENT_TYPE_BY_NAME.values()))


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(members[0], value) if len(members) == 1 else value
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v) for v in value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value
