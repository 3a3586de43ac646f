"""Frame -> events (pure). Never raises; every frame yields at least one event.

Routing follows reference §1.5 (``wire.classify``). Market data is merged per
conid: each :class:`Quote` carries the full last-known state plus the names
that changed. A frame that changes nothing (the duplicated first snapshot, a
repeated ``tic`` reply, the second copy of an execution) yields a
:class:`Control` saying so. Anything that cannot be interpreted yields a
:class:`DeadLetter` carrying the raw bytes and the reason; one bad element of a
multi-element frame does not spoil the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, tzinfo
from typing import Any

import orjson

from bridge.dead_letters import dead_letter, error_text, raw_text
from bridge.events import (
    Control,
    ControlKind,
    DeadLetter,
    Event,
    Quote,
)
from bridge.ingest import bounds, wire
from bridge.ingest.fields import (
    AvailabilityCodes,
    ElementError,
    Prefix,
    Unparsed,
    quote_field_table,
    to_int,
    unprefixed,
)
from bridge.ingest.normalize import control
from bridge.ingest.normalize.account import AccountState
from bridge.ingest.normalize.control import as_object as _object
from bridge.ingest.normalize.history import book_ladder, historical_bars
from bridge.ingest.normalize.quote_state import (
    NotSubscribed,
    QuoteState,
    check_subscribed,
    conid_from_target,
    keep_extra,
    last_flags,
    merge_identity,
)
from bridge.ingest.normalize.trading import ExecutionLedger, OrderBook
from bridge.quote_fast import new_quote

_QUOTE_IDENTITY = frozenset({"topic", "conid", "conidEx", "_updated", "server_id", "6119", "6509"})


class Normalizer:
    """Turns gateway frames into events, holding the merged per-key state."""

    def __init__(self, bars_time_zone: tzinfo = UTC) -> None:
        self._bars_zone = bars_time_zone  # what smh startTime is read in (bridge.ingest.normalize.history)
        self._quotes: dict[str, QuoteState] = {}
        self._orders = OrderBook()
        self._executions = ExecutionLedger()
        self._accounts = AccountState()
        self._last_tic: Any = None
        self._topics: dict[str, wire.Topic | None] = {}
        self._availability = AvailabilityCodes()
        self.dropped_extra_values = 0  # unknown quote values dropped past bounds.MAX_EXTRA_BYTES
        self._subscribed: set[str] | None = None  # quote targets state is kept for; None: every target
        # smd frames normalized the fast way, tallied for a metering caller (see _tally_frame)
        self.md_frames = 0
        self.md_bytes = 0
        self.md_unchanged_frames = 0  # of md_frames, those that yielded a Control (nothing changed)
        self.md_received_ns = 0  # when the last of them arrived
        self._quote_keys = quote_field_table(_QUOTE_IDENTITY)
        self._handlers: dict[wire.FrameKind, Callable[[dict[str, Any]], list[Event]]] = {
            wire.FrameKind.ERROR: control.error,
            wire.FrameKind.CONTROL: control.control,
            wire.FrameKind.SYSTEM: control.system,
            wire.FrameKind.STS: control.sts,
            wire.FrameKind.ACT: lambda obj: [self._accounts.properties(_object(obj.get("args")))],
            wire.FrameKind.BLT: control.bulletin,
            wire.FrameKind.NTF: control.notification,
            wire.FrameKind.TIC: self._tic,
        }

    # ------------------------------------------------------------------------------ session hooks

    def expect_snapshot(self, target: int | str) -> None:
        """An ``smd`` was (re)sent for this target (a conid, ``conid@EXCH`` or a combo):
        flag its next frame as a snapshot."""
        state = self._quotes.get(str(target))
        if state is not None:
            state.snapshot_pending = True
        if self._subscribed is not None:
            self._subscribed.add(str(target))

    @property
    def quote_states(self) -> int:
        """How many quote streams have merged state."""
        return len(self._quotes)

    def restrict_to_subscribed(self) -> None:
        """Keep quote state only for targets an ``smd`` was sent for (``expect_snapshot``): a
        frame for any other target is a dead letter (``unsubscribed_target``) and leaves no state,
        so a gateway echoing a million topics nobody asked for costs nothing to keep."""
        if self._subscribed is None:
            self._subscribed = set(self._quotes)

    def forget_target(self, target: str) -> None:
        """The subscription for ``target`` was dropped: its state goes, its frames become dead letters."""
        if self._subscribed is not None:
            self._subscribed.discard(target)
        self._quotes.pop(target, None)

    def forget_quote(self, conid: int) -> None:
        """Drop the merged state of every stream of ``conid``: its next frame starts afresh."""
        head = str(conid)
        for target in [t for t in self._quotes if t.split("@", 1)[0].split(";", 1)[0] == head]:
            del self._quotes[target]

    def connection_reset(self) -> None:
        """A new socket: market data starts again from fresh snapshots; orders and fills are kept."""
        self._quotes.clear()
        self._last_tic = None

    # ---------------------------------------------------------------------------------- frames

    def normalize(self, data: bytes | str, received_ns: int) -> list[Event]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is not dict:
            events = self._slow_decode(data, received_ns)
            self._tally_frame(events, data, received_ns)
            return events
        try:
            # Fast path for data topics (reference §1.5 precedence: an error key comes first).
            topic_name = obj.get("topic")
            topic = None
            if type(topic_name) is str and "error" not in obj:
                topic = self._topics.get(topic_name) or self._topic(topic_name)
            if topic is None:
                events = self._classified(obj, data, received_ns)
            elif topic.channel == "md":
                event = self._quote(topic, obj)
                # Market data, the bulk of the traffic, is only tallied here (a few stores rather
                # than a hook call per frame); a metering caller reads the tallies once per batch.
                self.md_frames += 1
                self.md_bytes += len(data)
                self.md_received_ns = received_ns
                if type(event) is not Quote:
                    self.md_unchanged_frames += 1
                return [event]
            else:
                events = self._data(topic, obj, data, received_ns)
                events = events or [Control(ControlKind.UNCHANGED, topic_name)]
        except NotSubscribed as exc:
            events = [self._dead(data, received_ns, "unsubscribed_target", str(exc), obj.get("topic"))]
        except Exception as exc:  # noqa: BLE001 - the normalizer never raises: anything unforeseen is a dead letter
            events = [self._dead(data, received_ns, "uninterpretable", error_text(exc), obj.get("topic"))]
        events = _representable(events, data, received_ns)
        self._tally_frame(events, data, received_ns)
        return events

    def _topic(self, name: str) -> wire.Topic | None:
        if name in self._topics:
            return self._topics[name]
        topic = wire.parse_topic(name)
        if len(self._topics) < _MAX_TOPICS:
            self._topics[name] = topic
        return topic

    def _tally_frame(self, events: list[Event], data: bytes | str, received_ns: int) -> None:
        """Every frame passes here (a metering subclass counts it) except the smd frames of the
        fast path, which are only tallied in ``md_frames``, ``md_bytes`` and ``md_unchanged_frames``."""

    def _slow_decode(self, data: bytes | str, received_ns: int) -> list[Event]:
        if data == b"ech+hb" or data == "ech+hb":
            return [Control(ControlKind.ECHO, None, text="ech+hb")]
        decoded = wire.decode_frame(data)
        obj = decoded.obj
        if obj is None:
            return [self._dead(data, received_ns, decoded.outcome.value, decoded.error)]
        try:
            events = self._classified(obj, data, received_ns)
        except NotSubscribed as exc:
            events = [self._dead(data, received_ns, "unsubscribed_target", str(exc), obj.get("topic"))]
        except Exception as exc:  # noqa: BLE001 - see normalize()
            events = [self._dead(data, received_ns, "uninterpretable", error_text(exc), obj.get("topic"))]
        return _representable(events, data, received_ns)

    def _classified(self, obj: dict[str, Any], data: bytes | str, received_ns: int) -> list[Event]:
        kind, topic = wire.classify(obj)
        if kind is wire.FrameKind.DATA:
            assert topic is not None
            events = self._data(topic, obj, data, received_ns)
        elif kind is wire.FrameKind.UNKNOWN_TOPIC:
            events = [self._dead(data, received_ns, "unknown_topic", None, obj.get("topic"))]
        elif bounds.depth_exceeds(obj, bounds.MAX_DEPTH):
            events = [self._dead(data, received_ns, "unrepresentable", _TOO_DEEP, obj.get("topic"))]
        else:
            events = self._handlers[kind](obj)
        return events or [Control(ControlKind.UNCHANGED, _topic_name(obj))]

    def _dead(
        self, data: bytes | str, received_ns: int, reason: str, error: str | None, topic: Any = None
    ) -> DeadLetter:
        return dead_letter(data, received_ns, reason, error, topic)

    def _data(
        self, topic: wire.Topic, obj: dict[str, Any], data: bytes | str, received_ns: int
    ) -> list[Event]:
        channel = topic.channel
        if channel == "md":
            return [self._quote(topic, obj)]
        if channel == "or":
            return self._elements(obj, "args", self._orders.apply, data, received_ns)
        if channel == "tr":
            args = obj.get("args")
            if args == []:
                return [Control(ControlKind.SUBSCRIPTION_ACK, "str")]
            return self._elements(obj, "args", self._executions.apply, data, received_ns)
        if bounds.depth_exceeds(obj, bounds.MAX_DEPTH):
            # Checked before anything is merged, so no kept state ever holds such a value; the
            # element channels above check each element (one deep element spoils only itself).
            return [self._dead(data, received_ns, "unrepresentable", _TOO_DEEP, obj.get("topic"))]
        if channel == "pl":
            rows = _object(obj.get("args"))
            return [e for key, row in rows.items() if (e := self._accounts.pnl(key, row)) is not None]
        if channel in ("sd", "ld"):
            account = topic.target or ""
            apply = self._accounts.summary if channel == "sd" else self._accounts.ledger
            return self._elements(obj, "result", lambda row: apply(account, row), data, received_ns)
        if channel == "bd":
            return [book_ladder(topic, obj)]
        return [historical_bars(topic, obj, self._bars_zone)]

    def _elements(
        self,
        obj: dict[str, Any],
        key: str,
        apply: Callable[[Mapping[str, Any]], Event | None],
        data: bytes | str,
        received_ns: int,
    ) -> list[Event]:
        items = obj.get(key)
        if isinstance(items, Mapping):
            items = [items]
        if not isinstance(items, list):
            raise ElementError(f"{key} is not a list")
        events: list[Event] = []
        for item in items:
            try:
                if not isinstance(item, Mapping):
                    raise ElementError(f"{key} element is not an object")
                if bounds.depth_exceeds(item):
                    raise ElementError(_TOO_DEEP)
                event = apply(item)
            except (ElementError, Unparsed) as exc:
                element = orjson.dumps(item).decode() if bounds.encodable(item) else raw_text(data)[0]
                error = error_text(exc, str)
                topic = obj.get("topic")
                events.append(self._dead(element, received_ns, "uninterpretable_element", error, topic))
                continue
            if event is not None:
                events.append(event)
        return events

    # ---------------------------------------------------------------------------- market data

    def _quote(self, topic: wire.Topic, obj: dict[str, Any]) -> Event:
        # State is keyed by the echoed target, so venue-qualified and combo streams stay apart;
        # combos carry spread conid 0 (reference §2.1).
        targets = topic.targets
        target = targets[0] if targets else str(obj.get("conid", ""))
        conid = obj.get("conid")
        if type(conid) is not int:
            conid = to_int(conid)
            if conid is None:
                conid = conid_from_target(target)
        state = self._quotes.get(target)
        if state is None:
            check_subscribed(self._subscribed, target, obj.get("conidEx"))
            state = self._new_quote_state(target, obj)
        if state.by_conid_ex:
            state = self._combo_state(state, obj)
        changed = self._merge_quote(state, obj)
        updated = obj.get("_updated")
        updated_ms = updated if type(updated) is int else to_int(updated)
        if not changed and (not state.snapshot_pending or not state.values):
            kind = ControlKind.DUPLICATE if state.values else ControlKind.EMPTY_UPDATE
            return Control(kind, _topic_name(obj))
        state.revision = state.revision + 1 if updated_ms == state.updated_ms and updated_ms else 0
        state.updated_ms = updated_ms
        snapshot, state.snapshot_pending = state.snapshot_pending, False
        return new_quote(
            conid,
            state.conid_ex,
            updated_ms,
            state.server_id,
            snapshot,
            tuple(changed),
            dict(state.values),
            state.revision,
            state.last_is_prior_close,
            state.halted,
            state.availability,
            dict(state.extra) if state.extra else {},
        )

    def _new_quote_state(self, target: str, obj: dict[str, Any]) -> QuoteState:
        """A combo's state is its full target, which is also its ``conid_ex``, key and id. How the
        gateway echoes a combo is unconfirmed (reference §2.1): the target in the topic is used when
        it names the legs; when only ``conidEx`` does, each frame's ``conidEx`` picks the combo."""
        if wire.is_combo(target):
            state = self._quotes[target] = QuoteState(conid_ex=target, combo=target)
            return state
        conid_ex = obj.get("conidEx")
        shared = type(conid_ex) is str and wire.is_combo(conid_ex)
        state = self._quotes[target] = QuoteState(by_conid_ex=shared)
        return state

    def _combo_state(self, shared: QuoteState, obj: dict[str, Any]) -> QuoteState:
        conid_ex = obj.get("conidEx")
        if type(conid_ex) is not str or not wire.is_combo(conid_ex):
            return shared  # no legs named: merged into the topic's own state
        state = self._quotes.get(conid_ex)
        if state is None:
            check_subscribed(self._subscribed, conid_ex, conid_ex)
            state = self._quotes[conid_ex] = QuoteState(conid_ex=conid_ex, combo=conid_ex)
        return state

    def _merge_quote(self, state: QuoteState, obj: dict[str, Any]) -> list[str]:
        changed: list[str] = []
        values, extra = state.values, state.extra
        spec_of, missing, current = self._quote_keys.get, _MISSING, values.get
        for key, raw in obj.items():
            spec = spec_of(key, missing)
            if spec is None:  # identity keys, handled below
                continue
            if spec is missing:
                if extra.get(key, missing) != raw:
                    self.dropped_extra_values += keep_extra(state, key, raw, changed)
                continue
            name, parsed, prefixed = spec
            if prefixed is _LAST_PRICE:
                prefix = raw[0] if type(raw) is str and raw and raw[0] in "CH" else ""
                last_flags(state, prefix, changed)
            try:
                value = parsed[raw]
            except (Unparsed, TypeError):  # TypeError: a list or an object, which no kind accepts
                value = None
                if prefixed:
                    raw = unprefixed(raw)
                if extra.get(key, missing) != raw:
                    self.dropped_extra_values += keep_extra(state, key, raw, changed)
            if current(name, missing) != value:
                values[name] = value
                changed.append(name)
        merge_identity(state, obj, changed, self._availability)
        return changed

    def _tic(self, obj: dict[str, Any]) -> list[Event]:
        previous, self._last_tic = self._last_tic, obj.get("lastAccessed")
        return control.tic(obj, previous)

    # ------------------------------------------------------------------------- reconciliation

    def reconcile_order(self, row: Mapping[str, Any]) -> Event | None:
        """Apply a REST order row after a gap; an Order marked reconciled, or None if nothing changed."""
        return self._orders.apply(row, reconciled=True)

    def reconcile_execution(self, row: Mapping[str, Any]) -> Event | None:
        """Apply a REST trade row after a gap; None when that execution was already published."""
        event = self._executions.apply(row, reconciled=True)
        return None if isinstance(event, Control) else event


_MISSING = object()
_LAST_PRICE = Prefix.LAST_PRICE
_TOO_DEEP = f"nested deeper than {bounds.MAX_DEPTH} levels"
_MAX_TOPICS = 100_000  # parsed topics kept per normalizer; data topics are one per stream


def _topic_name(obj: Mapping[str, Any]) -> str | None:
    topic = obj.get("topic")
    return topic if isinstance(topic, str) else None






def _representable(events: list[Event], data: bytes | str, received_ns: int) -> list[Event]:
    """Every event emitted can be encoded: one that cannot (a value nested past orjson's writing
    limit, an integer past 64 bits) is replaced by a dead letter of its frame. Quotes are bounded
    as they merge (``keep_extra``); the other kinds are low-volume and checked."""
    for index, event in enumerate(events):
        if type(event) is not Control and not bounds.encodable(event):
            error = f"{type(event).__name__} holds a value that cannot be encoded"
            topic = event.topic if type(event) is DeadLetter else None
            events[index] = dead_letter(data, received_ns, "unrepresentable", error, topic)
    return events
