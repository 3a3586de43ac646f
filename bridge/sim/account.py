"""Account-level frames: PnL (``spl``), summary (``ssd``), ledger (``sld``), historical bars
(``smh``) and the BookTrader ladder (``sbd``), shaped as in reference §2.2, §2.3, §2.6-§2.8."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from bridge.sim.market import QuoteState, instrument

SUMMARY_MONEY = (
    "NetLiquidation-S", "ExcessLiquidity-S", "AccruedCash-S", "BuyingPower-S", "TotalCashValue-S"
)
LEDGER_KEYS = ("LedgerListBASE", "LedgerListUSD", "LedgerListEUR")


class AccountState:
    """Slowly drifting balances of the one simulated account."""

    def __init__(self, account: str, rng: random.Random) -> None:
        self.account = account
        self._rng = rng
        self.net_liq = 1_017_353.16
        self.dpl = 0.0
        self.upl = 4600.0
        self.cash = 976_920.88
        self.eur_cash = 1250.0

    def step(self) -> None:
        move = self._rng.uniform(-50, 50)
        self.dpl = round(self.dpl + move, 2)
        self.upl = round(self.upl + move, 2)
        self.net_liq = round(self.net_liq + move, 2)

    def pnl_frame(self, partial: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"rowType": 1, "dpl": self.dpl, "upl": self.upl}
        if not partial:
            row.update(nl=self.net_liq, el=round(self.net_liq * 0.99, 2), uel=round(self.net_liq * 0.988, 2),
                       mv=37910.0)
        return {"topic": "spl", "args": {f"{self.account}.Core": row}}

    def summary_frame(self, keys: list[str], fields: list[str]) -> dict[str, Any]:
        now = int(time.time())
        rows: list[dict[str, Any]] = [
            {"key": "AccountCode", "value": self.account, "severity": 0, "timestamp": now}
        ]
        values = {"NetLiquidation-S": self.net_liq, "ExcessLiquidity-S": round(self.net_liq * 0.99, 2),
                  "AccruedCash-S": 2521.61, "BuyingPower-S": round(self.net_liq * 4, 2),
                  "TotalCashValue-S": self.cash}
        rows.extend({"key": key, "currency": "USD", "monetaryValue": values[key], "severity": 0,
                     "timestamp": now} for key in SUMMARY_MONEY)
        return {"result": _select(rows, keys, fields), "topic": f"ssd+{self.account}"}

    def ledger_frame(self, keys: list[str], fields: list[str], blank: set[str]) -> dict[str, Any]:
        now = int(time.time())
        rows = []
        for key in LEDGER_KEYS:
            if key in blank:
                rows.append({"key": key, "timestamp": now})
                continue
            currency = key.removeprefix("LedgerList")
            cash = self.eur_cash if currency == "EUR" else self.cash
            rows.append({
                "acctCode": self.account, "cashbalance": cash, "cashBalanceFXSegment": 0.0, "key": key,
                "dividends": 0.0, "exchangeRate": 1.0 if currency != "EUR" else 1.0842,
                "netLiquidationValue": self.net_liq, "realizedPnl": 0.0, "unrealizedPnl": self.upl,
                "secondKey": currency, "settledCash": cash, "severity": 0, "stockMarketValue": 37910.67,
                "interest": 2521.61, "timestamp": now,
            })
        return {"result": _select(rows, keys, fields), "topic": f"sld+{self.account}"}


def _select(rows: list[dict[str, Any]], keys: list[str], fields: list[str]) -> list[dict[str, Any]]:
    """Apply ``keys``/``fields`` filters; ``key``, ``timestamp`` (and ``acctCode``) always stay."""
    wanted_keys = {k for k in keys if k}
    wanted_fields = {f.lower() for f in fields if f} | {"key", "timestamp", "acctcode", "value"}
    out = []
    for row in rows:
        if wanted_keys and row["key"] not in wanted_keys and row["key"] != "AccountCode":
            continue
        if len(wanted_fields) > 4:
            row = {k: v for k, v in row.items() if k.lower() in wanted_fields}
        out.append(row)
    return out


BAR_SECONDS = {"min": 60, "h": 3600, "d": 86400, "w": 604800, "m": 2678400}


def bar_seconds(bar: Any) -> int:
    """``5min`` -> 300, ``1h`` -> 3600, ...; 300 for anything else."""
    text = str(bar or "")
    digits = "".join(ch for ch in text if ch.isdigit())
    unit = text[len(digits):]
    return int(digits) * BAR_SECONDS[unit] if digits and unit in BAR_SECONDS else 300


def history_frame(
    conid: int, server_id: str, rng: random.Random, args: dict[str, Any] | None = None, live: bool = True,
    bars: int = 20,
) -> dict[str, Any]:
    """One ``smh`` answer: the REST history shape with ``serverId`` and ``topic``.

    ``live``: as the live gateway sends it (reference §2.2 [OBS]): bars without ``t`` (bar i starts
    at ``startTime`` + i * ``barLength``, ``startTime`` in UTC) and the request echoed in
    ``payload``; else the documented shape, each bar with its ``t``."""
    inst = instrument(conid)
    quote = QuoteState(inst, rng)
    length_s = bar_seconds((args or {}).get("bar"))
    start_ms = (int(time.time()) // length_s * length_s - bars * length_s) * 1000
    data: list[dict[str, Any]] = []
    for index in range(bars):
        open_ = quote.last
        for _ in range(5):
            quote.step()
        close = quote.last
        bar: dict[str, Any] = {"o": open_, "c": close, "h": round(max(open_, close) + 0.05, 2),
                               "l": round(min(open_, close) - 0.05, 2), "v": float(rng.randint(1000, 90000))}
        if not live:
            bar["t"] = start_ms + index * length_s * 1000
        data.append(bar)
    high_at = max(range(bars), key=lambda i: data[i]["h"])
    low_at = min(range(bars), key=lambda i: data[i]["l"])
    minutes = length_s // 60
    frame: dict[str, Any] = {
        "serverId": server_id, "symbol": inst.symbol, "text": inst.company, "priceFactor": 100,
        "startTime": time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(start_ms / 1000)),
        "high": f"{round(data[high_at]['h'] * 100)}/{data[high_at]['v']:.2f}/{high_at * minutes}",
        "low": f"{round(data[low_at]['l'] * 100)}/{data[low_at]['v']:.2f}/{low_at * minutes}",
        "timePeriod": str((args or {}).get("period") or "1d"), "barLength": length_s, "mdAvailability": "S",
        "mktDataDelay": 0, "outsideRth": False, "volumeFactor": 1, "priceDisplayRule": 1,
        "priceDisplayValue": "2", "negativeCapable": False, "messageVersion": 2, "data": data,
        "points": len(data) - 1, "travelTime": 3, "topic": f"smh+{conid}",
    }  # fmt: skip
    if live:
        frame["payload"] = orjson.dumps(args or {}, option=orjson.OPT_INDENT_2).decode() + "\n"
    return frame


def history_update(
    conid: int, server_id: str, tick_num: int, quote: QuoteState, rng: random.Random
) -> dict[str, Any]:
    """A live ``tickNum`` frame after the first answer (reference §2.2 [OBS]): one partial bar.

    What the live gateway's values mean is unexplained (``{"o":25.89,"c":1.111}``, ``{"o":0.01}``);
    the simulator sends the same shape with the current last price and, sometimes, a second value.
    """
    partial: dict[str, float] = {"o": quote.last}
    if rng.random() < 0.5:
        partial["c"] = round(rng.uniform(0.0, 2.0), 3)
    return {"serverId": server_id, "tickNum": tick_num, "negativeCapable": False, "data": [partial],
            "points": 0, "travelTime": rng.randint(100, 6000), "topic": f"smh+{conid}"}  # fmt: skip


def ladder_frame(topic: str, quote: QuoteState, rng: random.Random) -> dict[str, Any]:
    """A full BookTrader ladder around the last price (reference §2.3)."""
    rows: list[dict[str, Any]] = []
    last = quote.last
    for index in range(9):
        price = round(last + (4 - index) * 0.01, 2)
        row: dict[str, Any] = {"row": index, "focus": 1 if index == 4 else 0, "price": f"{price:.2f}"}
        if index == 4:
            row["price"] = f"{quote.last_size} @ {price:.2f}"
        elif index < 4:
            row["ask"] = str(100 * rng.randint(1, 20))
        else:
            row["bid"] = str(100 * rng.randint(1, 20))
        rows.append(row)
    return {"topic": topic, "data": rows}
