"""Gateway value formats and the market-data field table (pure).

Reference §4: almost every value arrives as a string, even numbers. Rules:
``""`` is unknown (``None``), never 0; thousands commas are removed; ``K``,
``M``, ``B``, ``T`` suffixes scale (``B``/``T`` are unconfirmed in the
reference; accepting them is the tolerant choice); a leading ``C`` (prior
close) or ``H`` (halted) on a price becomes a flag, never part of the number
(documented for field 31; stripped from other price fields too, since a price
that cannot be parsed is worse than one whose prefix we tolerate).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

from bridge.events import MarketDataAvailability, Scalar


class Kind(enum.Enum):
    PRICE = "price"  # number, may carry a C/H prefix
    NUMBER = "number"  # number, may carry commas, a K/M/B/T suffix or a trailing %
    INT = "int"
    TEXT = "text"
    FLAG01 = "flag01"  # "1" / "0"


_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


class Unparsed(Exception):
    """A value that does not fit its kind; the caller keeps the raw value."""


class ElementError(ValueError):
    """One element of a frame cannot be interpreted; it becomes a dead letter on its own."""


def to_float(value: Any) -> float | None:
    """Gateway number -> float; ``""``/None -> None; raises Unparsed for anything else."""
    cls = type(value)
    if cls is float:
        return value  # type: ignore[no-any-return]
    if cls is int:
        return float(value)
    if value is None:
        return None
    if cls is not str:
        raise Unparsed(value)
    if not value:
        return None
    if not "0" <= value[-1] <= "9":  # "24.2M", "0.5%", " 12 ": straight to the tolerant parser,
        return _slow_float(value)  # not through a ValueError (~0.6 us)
    if "," in value:
        value = value.replace(",", "")
    try:
        number = float(value)
    except ValueError:
        return _slow_float(value)
    if number - number != 0.0:  # nan or infinity: not a market value
        raise Unparsed(value)
    return number


_INT_LIMIT = 2**63


def _slow_float(text: str) -> float:
    cleaned = text.strip().replace(",", "")
    if cleaned.endswith("%"):
        cleaned = cleaned[:-1]
    scale = 1.0
    if cleaned and cleaned[-1].upper() in _SUFFIX:
        scale = _SUFFIX[cleaned[-1].upper()]
        cleaned = cleaned[:-1]
    try:
        number = float(cleaned) * scale
    except ValueError:
        raise Unparsed(text) from None
    if number - number != 0.0:
        raise Unparsed(text)
    return number


def to_int(value: Any) -> int | None:
    """Gateway integer (number or numeric string) within 64 bits; ``""``/None -> None."""
    cls = type(value)
    if cls is int:
        if -_INT_LIMIT <= value < _INT_LIMIT:
            return value  # type: ignore[no-any-return]
        raise Unparsed(value)
    if cls is str:
        if not value:
            return None
        try:
            exact = int(value)
        except ValueError:
            number = _slow_float(value)
        else:
            if -_INT_LIMIT <= exact < _INT_LIMIT:
                return exact
            raise Unparsed(value)
    elif cls is float:
        number = value
    elif value is None:
        return None
    else:
        raise Unparsed(value)
    if number - number != 0.0 or number != int(number) or not -_INT_LIMIT <= number < _INT_LIMIT:
        raise Unparsed(value)
    return int(number)


def to_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise Unparsed(value)


def to_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if value in ("1", 1, "true", "True"):
        return True
    if value in ("0", 0, "false", "False"):
        return False
    raise Unparsed(value)


_TIMELINE = {
    "R": "realtime",
    "D": "delayed",
    "Z": "frozen",
    "Y": "frozen_delayed",
    "N": "not_subscribed",
    "O": "api_acknowledgement_missing",
    "i": "incomplete",
    "v": "vdr_exempt",
    "S": "streaming",
}


def decode_availability(code: Any) -> MarketDataAvailability | None:
    """Field 6509: char 1 timeline, char 2 ``P`` snapshot / ``p`` consolidated, char 3 ``B`` book."""
    if not isinstance(code, str) or not code:
        return None
    second = code[1] if len(code) > 1 else ""
    return MarketDataAvailability(
        code=code,
        timeline=_TIMELINE.get(code[0]),
        snapshot_available=(second == "P") if second else None,
        consolidated=(second == "p") if second else None,
        top_of_book=(code[2] == "B") if len(code) > 2 else None,
    )


class AvailabilityCodes:
    """``decode_availability`` with one shared (immutable) object per code, so every conid on the
    same feed carries the same object and the codec serializes it once. One per normalizer."""

    def __init__(self, max_codes: int = 1024) -> None:
        self._decoded: dict[str, MarketDataAvailability] = {}
        self._max_codes = max_codes  # the real codes are a handful; junk is not kept

    def __call__(self, code: Any) -> MarketDataAvailability | None:
        decoded = self._decoded.get(code) if type(code) is str else None
        if decoded is None:
            decoded = decode_availability(code)
            if decoded is not None and len(self._decoded) < self._max_codes:
                self._decoded[code] = decoded
        return decoded


P, N, INT, T, F = Kind.PRICE, Kind.NUMBER, Kind.INT, Kind.TEXT, Kind.FLAG01

# field id -> (name, kind), reference §4 (the Campus table, plus ibind's extra rows).
MARKET_DATA_FIELDS: dict[str, tuple[str, Kind]] = {
    "31": ("last", P),
    "55": ("symbol", T),
    "58": ("text", T),
    "70": ("high", P),
    "71": ("low", P),
    "73": ("position_market_value", N),
    "74": ("position_avg_price", N),
    "75": ("unrealized_pnl", N),
    "76": ("formatted_position", T),
    "77": ("formatted_unrealized_pnl", T),
    "78": ("daily_pnl", N),
    "79": ("realized_pnl", N),
    "80": ("unrealized_pnl_pct", N),
    "82": ("change", N),
    "83": ("change_pct", N),
    "84": ("bid", P),
    "85": ("ask_size", N),
    "86": ("ask", P),
    "87": ("volume", N),
    "88": ("bid_size", N),
    "201": ("right", T),
    "6004": ("exchange", T),
    "6008": ("conid_field", INT),
    "6070": ("sec_type", T),
    "6072": ("months", T),
    "6073": ("regular_expiry", T),
    "6457": ("underlying_conid", INT),
    "6508": ("service_params", T),
    "7051": ("company_name", T),
    "7057": ("ask_exchange", T),
    "7058": ("last_exchange", T),
    "7059": ("last_size", N),
    "7068": ("bid_exchange", T),
    "7084": ("implied_vol_pct", N),
    "7085": ("put_call_interest", N),
    "7086": ("put_call_volume", N),
    "7087": ("hist_vol_pct", N),
    "7088": ("hist_vol_close_pct", N),
    "7089": ("option_volume", N),
    "7094": ("conid_exchange", T),
    "7184": ("can_be_traded", F),
    "7219": ("contract_description", T),
    "7220": ("contract_description_2", T),
    "7221": ("listing_exchange", T),
    "7280": ("industry", T),
    "7281": ("category", T),
    "7282": ("average_volume", N),
    "7283": ("option_implied_vol_pct", N),
    "7284": ("hist_vol_pct_deprecated", N),
    "7285": ("put_call_ratio", N),
    "7286": ("dividend_amount", N),
    "7287": ("dividend_yield_pct", N),
    "7288": ("ex_dividend_date", T),
    "7289": ("market_cap", N),
    "7290": ("pe", N),
    "7291": ("eps", N),
    "7292": ("cost_basis", N),
    "7293": ("week52_high", P),
    "7294": ("week52_low", P),
    "7295": ("open", P),
    "7296": ("close", P),
    "7308": ("delta", N),
    "7309": ("gamma", N),
    "7310": ("theta", N),
    "7311": ("vega", N),
    "7607": ("option_volume_change_pct", N),
    "7633": ("implied_vol_strike_pct", N),
    "7635": ("mark", P),
    "7636": ("shortable_shares", N),
    "7637": ("borrow_fee_rate", N),
    "7638": ("option_open_interest", N),
    "7639": ("pct_of_mark_value", N),
    "7644": ("shortable", T),
    "7671": ("dividends_next_12m", N),
    "7672": ("dividends_ttm", N),
    "7674": ("ema_200", P),
    "7675": ("ema_100", P),
    "7676": ("ema_50", P),
    "7677": ("ema_20", P),
    "7678": ("price_vs_ema_200_pct", N),
    "7679": ("price_vs_ema_100_pct", N),
    "7724": ("price_vs_ema_50_pct", N),
    "7681": ("price_vs_ema_20_pct", N),
    "7682": ("change_since_open", N),
    "7683": ("upcoming_event", T),
    "7684": ("upcoming_event_date", T),
    "7685": ("upcoming_analyst_meeting", T),
    "7686": ("upcoming_earnings", T),
    "7687": ("upcoming_misc_event", T),
    "7688": ("recent_analyst_meeting", T),
    "7689": ("recent_earnings", T),
    "7690": ("recent_misc_event", T),
    "7694": ("probability_max_return_pct", N),
    "7695": ("break_even", P),
    "7696": ("spx_delta", N),
    "7697": ("futures_open_interest", N),
    "7698": ("last_yield", N),
    "7699": ("bid_yield", N),
    "7702": ("probability_max_loss_pct", N),
    "7703": ("probability_max_profit_pct", N),
    "7704": ("organization_type", T),
    "7705": ("debt_class", T),
    "7706": ("ratings", T),
    "7707": ("bond_state_code", T),
    "7708": ("bond_type", T),
    "7714": ("last_trading_date", T),
    "7715": ("issue_date", T),
    "7718": ("beta", N),
    "7720": ("ask_yield", N),
    "7741": ("prior_close", P),
    "7762": ("volume_long", N),
    "7768": ("has_trading_permissions", F),
    "7920": ("daily_pnl_raw", N),
    "7921": ("cost_basis_raw", N),
}

FIELD_ID_BY_NAME: dict[str, str] = {name: fid for fid, (name, _) in MARKET_DATA_FIELDS.items()}

# Default subscription fields: last, bid, ask, sizes, volume, high/low/open/prior close, change, availability.
DEFAULT_MARKET_DATA_FIELDS: tuple[str, ...] = (
    "31", "84", "85", "86", "88", "7059", "87", "7762", "70", "71", "7295", "7741", "82", "83", "6509",
)  # fmt: skip


class ParseCache(dict[str, Scalar]):
    """Gateway string -> parsed value, for one kind of field: ``cache[raw]`` parses a string
    once, then it is a dict hit (most prices and sizes repeat, and a lookup costs a fraction of
    a parser call). Only strings are kept, so ``1``, ``1.0`` and ``True`` never meet; a value
    the parser refuses raises :class:`Unparsed` and is not kept.

    Bounded against hostile input: at most ``MAX_ENTRIES`` strings of at most ``MAX_KEY_CHARS``
    characters each (a longer one is parsed every time, never kept). One cache per kind per
    normalizer (:func:`quote_field_table`), never shared between normalizers."""

    __slots__ = ("_parse",)
    MAX_ENTRIES = 1 << 16  # then it starts again from empty: bounded memory, no eviction bookkeeping
    MAX_KEY_CHARS = 32  # prices, sizes and flags are short; a long value would pin its whole string

    def __init__(self, parse: Callable[[Any], Scalar]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, raw: Any) -> Scalar:
        value = self._parse(raw)
        if type(raw) is str and len(raw) <= self.MAX_KEY_CHARS:
            if len(self) >= self.MAX_ENTRIES:
                self.clear()
            self[raw] = value
        return value


def unprefixed(raw: Any) -> Any:
    """A price without its C (prior close) / H (halted) prefix."""
    return raw[1:] if type(raw) is str and raw and raw[0] in "CH" else raw


def _price(raw: Any) -> float | None:
    return to_float(unprefixed(raw))


_PARSERS: dict[Kind, Callable[[Any], Scalar]] = {
    Kind.PRICE: _price,
    Kind.NUMBER: to_float,
    Kind.INT: to_int,
    Kind.TEXT: to_text,
    Kind.FLAG01: to_bool,
}
class Prefix(enum.IntEnum):
    """Whether a field's raw value may carry a C/H prefix (prices); on the last price (31) the
    prefix also sets the quote's prior-close and halted flags."""

    NONE = 0
    PRICE = 1
    LAST_PRICE = 2


def _prefix(fid: str, kind: Kind) -> Prefix:
    if kind is not Kind.PRICE:
        return Prefix.NONE
    return Prefix.LAST_PRICE if fid == "31" else Prefix.PRICE


def quote_field_table(identity_keys: Iterable[str]) -> dict[str, Any]:
    """For the normalizer's hot path, one lookup per frame key: field id -> (name, the
    :class:`ParseCache` of its kind, its :class:`Prefix`), or None for ``identity_keys``.
    Each call makes new caches (one set per normalizer)."""
    parsed = {kind: ParseCache(parse) for kind, parse in _PARSERS.items()}
    fields = {
        fid: (name, parsed[kind], _prefix(fid, kind))
        for fid, (name, kind) in MARKET_DATA_FIELDS.items()
    }
    return {**fields, **dict.fromkeys(identity_keys)}


def json_type_of(kind: Kind) -> list[str]:
    """JSON Schema types of a market-data value of this kind (always nullable: unknown is null)."""
    return {
        Kind.PRICE: ["number", "null"],
        Kind.NUMBER: ["number", "null"],
        Kind.INT: ["integer", "null"],
        Kind.TEXT: ["string", "null"],
        Kind.FLAG01: ["boolean", "null"],
    }[kind]
