"""Book ladder (``sbd``) and historical bars (``smh``) frames -> events (pure).

``sbd``: whether updates are full ladders or row deltas is unconfirmed
(reference §2.3); each frame is treated as a full ladder replacing the last,
which is what the documented shape shows. ``smh``: the ``high``/``low`` summary
strings carry the price multiplied by ``priceFactor``; bar prices are unscaled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.events import Bar, BarExtreme, Bars, BookLadder, BookRow
from bridge.ingest import wire
from bridge.ingest.fields import Unparsed, to_bool, to_float, to_int, to_text
from bridge.ingest.normalize.trading import ElementError


def _conid(target: str | None) -> int:
    head = (target or "").split("@", 1)[0]
    if not head.isdigit():
        raise ElementError(f"no conid in topic target {target!r}")
    return int(head)


def _book_row(row: Any) -> BookRow:
    if not isinstance(row, Mapping):
        raise ElementError("book row is not an object")
    price_text = row.get("price")
    last_size = None
    if isinstance(price_text, str) and "@" in price_text:
        size_text, _, price_text = price_text.partition("@")
        last_size = to_float(size_text.strip())
        price_text = price_text.strip()
    return BookRow(
        row=to_int(row.get("row")) or 0,
        focus=bool(to_bool(row.get("focus"))),
        price=to_float(price_text),
        last_size=last_size,
        bid_size=to_float(row.get("bid")),
        ask_size=to_float(row.get("ask")),
    )


def book_ladder(topic: wire.Topic, obj: Mapping[str, Any]) -> BookLadder:
    targets = topic.targets
    if len(targets) < 2:
        raise ElementError(f"sbd topic without account and conid: {targets!r}")
    rows = obj.get("data")
    if not isinstance(rows, list):
        raise ElementError("sbd frame without a data list")
    return BookLadder(
        account=targets[0],
        conid=_conid(targets[1]),
        exchange=targets[2] if len(targets) > 2 else None,
        rows=tuple(sorted((_book_row(r) for r in rows), key=lambda r: r.row)),
    )


def _extreme(text: Any, price_factor: float | None) -> BarExtreme | None:
    if not isinstance(text, str) or not text:
        return None
    parts = text.split("/")
    try:
        price = to_float(parts[0])
        volume = to_float(parts[1]) if len(parts) > 1 else None
        minutes = to_int(parts[2]) if len(parts) > 2 else None
    except Unparsed:
        raise ElementError(f"bar summary {text!r} is not <price>/<volume>/<minutes>") from None
    if price is not None and price_factor:
        price = price / price_factor
    return BarExtreme(price, volume, minutes)


def _bar(item: Any) -> Bar:
    if not isinstance(item, Mapping):
        raise ElementError("bar is not an object")
    time_ms = to_int(item.get("t"))
    if time_ms is None:
        raise ElementError("bar without t")
    return Bar(time_ms, to_float(item.get("o")), to_float(item.get("h")), to_float(item.get("l")),
               to_float(item.get("c")), to_float(item.get("v")))  # fmt: skip


def historical_bars(topic: wire.Topic, obj: Mapping[str, Any]) -> Bars:
    conid = to_int(obj.get("conid")) if obj.get("conid") is not None else _conid(topic.target)
    assert conid is not None
    data = obj.get("data") or []
    if not isinstance(data, list):
        raise ElementError("smh data is not a list")
    factor = to_float(obj.get("priceFactor"))
    return Bars(
        conid=conid,
        server_id=to_text(obj.get("serverId")),
        symbol=to_text(obj.get("symbol")),
        text=to_text(obj.get("text")),
        price_factor=factor,
        start_time=to_text(obj.get("startTime")),
        time_period=to_text(obj.get("timePeriod")),
        bar_length_s=to_int(obj.get("barLength")),
        md_availability=to_text(obj.get("mdAvailability")),
        high=_extreme(obj.get("high"), factor),
        low=_extreme(obj.get("low"), factor),
        bars=tuple(_bar(item) for item in data),
    )
