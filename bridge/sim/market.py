"""Simulated top-of-book quotes: a random walk per conid, rendered as IBKR field ids.

Values follow reference §2.1 and §4: prices and sizes are strings (sizes with ``,`` thousands),
``83`` (change %) is a JSON number, ``6509`` is only in the first frame, ``6008`` is an integer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from bridge.sim.frames import ws_header


@dataclass(frozen=True, slots=True)
class Instrument:
    conid: int
    symbol: str
    company: str
    listing_exchange: str
    base_price: float


KNOWN: dict[int, Instrument] = {
    i.conid: i
    for i in (
        Instrument(265598, "AAPL", "APPLE INC", "NASDAQ.NMS", 190.0),
        Instrument(8314, "IBM", "INTL BUSINESS MACHINES CORP", "NYSE", 170.0),
        Instrument(272093, "MSFT", "MICROSOFT CORP", "NASDAQ.NMS", 410.0),
        Instrument(4815747, "NVDA", "NVIDIA CORP", "NASDAQ.NMS", 880.0),
        Instrument(76792991, "TSLA", "TESLA INC", "NASDAQ.NMS", 175.0),
        Instrument(3691937, "AMZN", "AMAZON.COM INC", "NASDAQ.NMS", 180.0),
        Instrument(756733, "SPY", "SPDR S&P 500 ETF TRUST", "ARCA", 520.0),
        Instrument(11004968, "ES", "E-MINI S&P 500", "CME", 5250.0),
    )
}

FIELDS_LAST = ("31", "7059", "87", "7762", "82", "83")
SUPPORTED_FIELDS = frozenset(
    {"31", "55", "70", "71", "82", "83", "84", "85", "86", "87", "88", "6004", "6008", "6070", "6509",
     "7051", "7059", "7221", "7295", "7635", "7741", "7762"}
)


def instrument(conid: int) -> Instrument:
    """A known instrument, or a made-up but stable one for any other conid."""
    known = KNOWN.get(conid)
    if known is not None:
        return known
    price = 20.0 + (conid * 7919 % 48000) / 100.0
    return Instrument(conid, f"SIM{conid}", f"SIMULATED {conid}", "NYSE", price)


def conid_of(target: str) -> int:
    """``265598@NASDAQ`` -> 265598; ``0;;;1/1,2/-1`` -> 0 (the spread conid); junk -> 0."""
    digits = ""
    for ch in target:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def _volume_text(volume: int) -> str:
    if volume >= 1_000_000:
        return f"{volume / 1_000_000:.1f}M"
    if volume >= 1_000:
        return f"{volume / 1_000:.1f}K"
    return str(volume)


class QuoteState:
    """The current quote of one conid; ``step`` moves it and returns the field ids that changed."""

    def __init__(self, inst: Instrument, rng: random.Random) -> None:
        self.inst = inst
        self._rng = rng
        self.prior_close = round(inst.base_price, 2)
        self.open = round(inst.base_price * (1 + rng.uniform(-0.01, 0.01)), 2)
        self.last = self.open
        self.high = self.last
        self.low = self.last
        self.spread = 0.01
        self.bid_size = 100 * rng.randint(1, 30)
        self.ask_size = 100 * rng.randint(1, 30)
        self.last_size = 100
        self.volume = rng.randint(100_000, 5_000_000)

    def step(self) -> set[str]:
        rng = self._rng
        changed: set[str] = set()
        if rng.random() < 0.6:
            tick = max(0.01, round(self.last * 0.0005, 2))
            self.last = max(0.01, round(self.last + rng.choice((-tick, tick, -0.01, 0.01)), 2))
            self.last_size = rng.choice((1, 5, 10, 100, 200, 300))
            self.volume += self.last_size
            changed.update(FIELDS_LAST)
            if self.last > self.high:
                self.high = self.last
                changed.add("70")
            if self.last < self.low:
                self.low = self.last
                changed.add("71")
        if rng.random() < 0.7 or changed:
            self.spread = rng.choice((0.01, 0.01, 0.02, 0.03))
            changed.update(("84", "86", "7635"))
        if rng.random() < 0.5:
            self.bid_size = 100 * rng.randint(1, 40)
            self.ask_size = 100 * rng.randint(1, 40)
            changed.update(("85", "88"))
        return changed

    @property
    def bid(self) -> float:
        return round(self.last - self.spread / 2, 2) if self.spread > 0.01 else round(self.last - 0.01, 2)

    @property
    def ask(self) -> float:
        return round(self.bid + self.spread, 2)

    def value(self, field_id: str) -> str | int | float | None:
        inst = self.inst
        table: dict[str, str | int | float] = {
            "31": f"{self.last:.2f}",
            "55": inst.symbol,
            "70": f"{self.high:.2f}",
            "71": f"{self.low:.2f}",
            "82": f"{self.last - self.prior_close:+.2f}",
            "83": round((self.last - self.prior_close) / self.prior_close * 100, 2),
            "84": f"{self.bid:.2f}",
            "85": f"{self.ask_size:,}",
            "86": f"{self.ask:.2f}",
            "87": _volume_text(self.volume),
            "88": f"{self.bid_size:,}",
            "6004": "SMART",
            "6008": inst.conid,
            "6070": "STK",
            "6509": "RpB",
            "7051": inst.company,
            "7059": str(self.last_size),
            "7221": inst.listing_exchange,
            "7295": f"{self.open:.2f}",
            "7635": f"{(self.bid + self.ask) / 2:.2f}",
            "7741": f"{self.prior_close:.2f}",
            "7762": str(self.volume),
        }
        return table.get(field_id)

    def snapshot(self, fields: frozenset[str]) -> dict[str, str | int | float]:
        out: dict[str, str | int | float] = {}
        for field_id in fields & SUPPORTED_FIELDS:
            value = self.value(field_id)
            if value is not None:
                out[field_id] = value
        out["6509"] = "RpB"
        return out

    def delta(self, changed: set[str], fields: frozenset[str]) -> dict[str, str | int | float]:
        out: dict[str, str | int | float] = {}
        for field_id in changed & fields:
            value = self.value(field_id)
            if value is not None:
                out[field_id] = value
        return out


# ------------------------------------------------------------------------------------------- combos


def combo_legs(target: str) -> tuple[tuple[int, int], ...]:
    """``28812380;;;265598/1,8314/-1`` -> ((265598, 1), (8314, -1)); () for a single contract."""
    _, separator, legs = target.partition(";;;")
    if not separator:
        return ()
    out = []
    for leg in legs.split(","):
        conid, _, ratio = leg.partition("/")
        try:
            out.append((int(conid), int(ratio)))
        except ValueError:
            continue
    return tuple(out)


COMBO_FIELDS = frozenset({"31", "84", "85", "86", "88", "7635"})


def combo_values(legs: list[tuple[QuoteState, int]], fields: frozenset[str]) -> dict[str, str | int | float]:
    """A spread's quote derived from its legs and ratios (a positive ratio buys the leg).

    Simulated: the real gateway prices combos itself and how is not documented, so its numbers
    are its own; these are a plausible stand-in. Buying the spread pays the ask of the legs bought
    and receives the bid of the legs sold, so ask = sum(r * ask if r > 0 else r * bid) and bid
    likewise; sizes are what every leg can fill (min of size / |ratio|)."""
    last = sum(r * q.last for q, r in legs)
    bid = sum(r * (q.bid if r > 0 else q.ask) for q, r in legs)
    ask = sum(r * (q.ask if r > 0 else q.bid) for q, r in legs)
    bid_size = min((q.bid_size if r > 0 else q.ask_size) // abs(r) for q, r in legs)
    ask_size = min((q.ask_size if r > 0 else q.bid_size) // abs(r) for q, r in legs)
    table: dict[str, str | int | float] = {
        "31": f"{last:.2f}", "84": f"{bid:.2f}", "86": f"{ask:.2f}", "85": f"{ask_size:,}",
        "88": f"{bid_size:,}", "7635": f"{(bid + ask) / 2:.2f}",
    }  # fmt: skip
    return {field_id: value for field_id, value in table.items() if field_id in fields}


def md_frame(
    target: str, conid: int, server_id: str, updated_ms: int, values: dict[str, str | int | float]
) -> dict[str, object]:
    """An ``smd`` frame with its identity keys (reference §2.1)."""
    frame: dict[str, object] = {
        "server_id": server_id, "conidEx": target, "conid": conid, "_updated": updated_ms
    }
    frame.update(values)
    frame["6119"] = server_id
    frame["topic"] = f"smd+{target}"
    return frame


_TS_PLACEHOLDER = 1_111_111_111_111


def burst_templates(
    target: str, server_id: str, fields: frozenset[str], rng: random.Random, count: int = 256
) -> list[tuple[bytes, bytes]]:
    """Pre-encoded delta frames for burst mode: (websocket header + payload head, payload tail).

    A frame on the wire is ``head + <13-digit _updated> + tail``; only the timestamp is filled in
    per batch, so the server's per-frame work is a list append.
    """
    conid = conid_of(target)
    quote = QuoteState(instrument(conid), rng)
    fields = fields or frozenset(("31", "84", "86"))
    out: list[tuple[bytes, bytes]] = []
    marker = str(_TS_PLACEHOLDER).encode()
    while len(out) < count:
        values = quote.delta(quote.step(), fields)
        if not values:
            continue
        payload = orjson.dumps(md_frame(target, conid, server_id, _TS_PLACEHOLDER, values))
        head, tail = payload.split(marker, 1)
        out.append((ws_header(len(payload), 0x1) + head, tail))
    return out
