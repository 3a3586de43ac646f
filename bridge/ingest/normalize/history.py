"""Book ladder (``sbd``) and historical bars (``smh``) frames -> events (pure).

``sbd``: whether updates are full ladders or row deltas is unconfirmed
(reference §2.3); each frame is treated as a full ladder replacing the last,
which is what the documented shape shows. ``smh``: the ``high``/``low`` summary
strings carry the price multiplied by ``priceFactor``; bar prices are unscaled.

Live ``smh`` frames differ from the documented example (reference §2.2, [OBS]): the first
answer's bars carry no ``t`` (bar ``i`` starts at ``startTime + i * barLength``) and the answer
is followed by ``tickNum`` frames with one partial bar of unexplained values, which are
published as partial updates exactly as sent. ``startTime`` carries no zone; it is read in a
configured one, UTC by default: the live frame ``"startTime":"20240301-18:21:00"`` for
``"outsideRth":false`` 1-minute bars is inside US regular hours only as UTC (13:21 New York).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from bridge.events import Bar, BarExtreme, Bars, BookLadder, BookRow
from bridge.ingest import wire
from bridge.ingest.fields import ElementError, Unparsed, to_bool, to_float, to_int, to_text

START_TIME_FORMAT = "%Y%m%d-%H:%M:%S"


def _conid(target: str | None) -> int:
    head = (target or "").split("@", 1)[0]
    if not head.isdigit():
        raise ElementError(f"no conid in topic target {target!r}")
    if len(head) > 19 or int(head) >= 2**63:
        raise ElementError(f"conid {head[:40]} in topic target exceeds 64 bits")
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


def _bar(item: Any, time_ms: int) -> Bar:
    return Bar(time_ms, to_float(item.get("o")), to_float(item.get("h")), to_float(item.get("l")),
               to_float(item.get("c")), to_float(item.get("v")))  # fmt: skip


def start_time_ms(text: str | None, zone: tzinfo) -> int | None:
    """``20240301-18:21:00`` read in ``zone`` -> epoch ms; None when absent or not in that format."""
    if not text:
        return None
    try:
        start = datetime.strptime(text, START_TIME_FORMAT)
    except ValueError:
        return None
    return int(start.replace(tzinfo=zone).timestamp()) * 1000


def _timed_bars(
    data: list[Any], start_ms: int | None, bar_length_s: int | None
) -> tuple[tuple[Bar, ...], str]:
    """Every bar with its time: its own ``t``, else ``start + i * barLength`` (reference §2.2)."""
    bars: list[Bar] = []
    derived = False
    for index, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise ElementError("bar is not an object")
        time_ms = to_int(item.get("t"))
        if time_ms is None:
            if start_ms is None or not bar_length_s:
                raise ElementError("bar without t, and no startTime and barLength to derive its time from")
            time_ms, derived = start_ms + index * bar_length_s * 1000, True
        bars.append(_bar(item, time_ms))
    return tuple(bars), "derived" if derived else "sent"


def _partial_bars(conid: int, obj: Mapping[str, Any], data: list[Any]) -> Bars:
    """A ``tickNum`` frame: a live update after the first answer, kept exactly as sent."""
    if not all(isinstance(item, Mapping) for item in data):
        raise ElementError("smh update element is not an object")
    return Bars(
        conid=conid, server_id=to_text(obj.get("serverId")), symbol=None, text=None, price_factor=None,
        start_time=None, time_period=None, bar_length_s=None, md_availability=None, high=None, low=None,
        bars=(), points=to_int(obj.get("points")), partial=True, tick_num=to_int(obj.get("tickNum")),
        partial_data=tuple(dict(item) for item in data),
    )  # fmt: skip


def historical_bars(topic: wire.Topic, obj: Mapping[str, Any], zone: tzinfo = UTC) -> Bars:
    """An ``smh`` frame: the first answer (bars timed by ``t`` or derived), or a ``tickNum`` update.

    ``zone``: what ``startTime`` is read in; the frames carry no zone (see ``bridge.config``).
    """
    conid = to_int(obj.get("conid")) if obj.get("conid") is not None else _conid(topic.target)
    assert conid is not None
    data = obj.get("data") or []
    if not isinstance(data, list):
        raise ElementError("smh data is not a list")
    if "tickNum" in obj:
        return _partial_bars(conid, obj, data)
    factor = to_float(obj.get("priceFactor"))
    start_time = to_text(obj.get("startTime"))
    start_ms = start_time_ms(start_time, zone)
    bar_length_s = to_int(obj.get("barLength"))
    bars, bar_times = _timed_bars(data, start_ms, bar_length_s)
    return Bars(
        conid=conid,
        server_id=to_text(obj.get("serverId")),
        symbol=to_text(obj.get("symbol")),
        text=to_text(obj.get("text")),
        price_factor=factor,
        start_time=start_time,
        time_period=to_text(obj.get("timePeriod")),
        bar_length_s=bar_length_s,
        md_availability=to_text(obj.get("mdAvailability")),
        high=_extreme(obj.get("high"), factor),
        low=_extreme(obj.get("low"), factor),
        bars=bars,
        points=to_int(obj.get("points")),
        start_time_ms=start_ms,
        time_zone=_zone_name(zone) if start_time else None,
        bar_times=bar_times if bars else None,
    )


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or zone)
