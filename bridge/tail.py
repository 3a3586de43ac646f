"""``ibkr-bridge tail``: consume the bridge's destinations and pretty-print each event.

What a downstream user runs first. The broker-specific reading lives in the
sink adapters (``read_topics`` in ``sinks/kafka_tail.py``, ``read_streams`` in
``sinks/redis.py``); this module filters and renders (pure).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from bridge.routing import DEFAULT_DESTINATIONS


@dataclass(frozen=True, slots=True)
class TailedEvent:
    """One event as a consumer reads it: where, under which key, its attributes and data."""

    destination: str
    key: str
    attributes: dict[str, str]
    data: Any

    @property
    def type(self) -> str:
        return self.attributes.get("type", "")


def matches(event: TailedEvent, types: Iterable[str]) -> bool:
    """``--type`` filters: a full type, or any part of it (``orders``, ``quote``, ``lifecycle``)."""
    wanted = list(types)
    return not wanted or any(t == event.type or t in event.type.split(".") for t in wanted)


def _numbers(data: dict[str, Any], names: Iterable[str]) -> str:
    return " ".join(f"{name}={data[name]}" for name in names if data.get(name) is not None)


def _quote(d: dict[str, Any]) -> str:
    values = d.get("values") or {}
    flags = [f for f in ("snapshot", "halted", "last_is_prior_close") if d.get(f)]
    return " ".join(
        filter(
            None,
            [
                _numbers(values, ("last", "bid", "ask", "bid_size", "ask_size", "volume")),
                f"changed={','.join(d.get('changed') or [])}",
                " ".join(flags),
            ],
        )
    )


def _order(d: dict[str, Any]) -> str:
    text = _numbers(
        d, ("status", "side", "symbol", "filled_quantity", "remaining_quantity", "price", "avg_price")
    )
    return text + (" reconciled" if d.get("reconciled") else "")


def _execution(d: dict[str, Any]) -> str:
    text = _numbers(d, ("execution_id", "side", "symbol", "size", "price", "commission"))
    return text + (" reconciled" if d.get("reconciled") else "")


_RENDER: dict[str, Callable[[dict[str, Any]], str]] = {
    "quote": _quote,
    "order": _order,
    "execution": _execution,
    "pnl": lambda d: _numbers(d, ("daily_pnl", "unrealized_pnl", "net_liquidation", "market_value")),
    "lifecycle": lambda d: _numbers(d, ("kind", "reason", "gap_id")),
    "deadletter": lambda d: _numbers(d, ("reason", "stage", "topic", "error")),
}


def render(event: TailedEvent) -> str:
    parts = event.type.split(".")
    name = parts[-2] if len(parts) >= 2 else event.type
    data = event.data if isinstance(event.data, dict) else {}
    summary = _RENDER[name](data) if name in _RENDER else orjson.dumps(event.data).decode()[:160]
    time = event.attributes.get("time", "")[11:23]
    return f"{time} {event.destination:<22} {name:<12} {event.key:<12} {summary}"


def default_destinations() -> list[str]:
    return list(DEFAULT_DESTINATIONS.values())


def from_kafka(topic: str, key: bytes, attributes: dict[str, str], value: bytes) -> TailedEvent:
    """A Kafka record in binary mode (``ce_*`` headers) or structured mode (the envelope as value)."""
    data = orjson.loads(value) if value else None
    if not attributes and isinstance(data, dict) and "specversion" in data:
        envelope = dict(data)
        data = envelope.pop("data", None)
        attributes = {k: str(v) for k, v in envelope.items()}
    return TailedEvent(topic, key.decode(errors="replace"), attributes, data)


def from_redis(stream: str, fields: dict[str, str]) -> TailedEvent:
    attributes = {k: v for k, v in fields.items() if k not in ("data", "key")}
    raw = fields.get("data")
    return TailedEvent(stream, fields.get("key", ""), attributes, orjson.loads(raw) if raw else None)


async def tail(
    events: AsyncIterator[TailedEvent],
    types: list[str],
    out: TextIO,
    *,
    as_json: bool = False,
    count: int | None = None,
) -> int:
    """Print matching events until ``count`` were shown (or forever); the number shown."""
    shown = 0
    async for event in events:
        if not matches(event, types):
            continue
        if as_json:
            envelope = {**event.attributes, "data": event.data}
            out.write(orjson.dumps(envelope).decode() + "\n")
        else:
            out.write(render(event) + "\n")
        out.flush()
        shown += 1
        if count is not None and shown >= count:
            break
    return shown
