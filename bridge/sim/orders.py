"""Simulated orders: placement over REST, lifecycle on ``sor``, executions on ``str`` (reference §2.4,
§2.5, §5), and a record of every order and execution for tests to compare against.

Lifecycle: Inactive (full element) -> a sparse echo -> PendingSubmit -> PreSubmitted -> Submitted ->
partial fills (sparse deltas) -> Filled; or PendingCancel (full element) -> Cancelled on DELETE.
A limit order more than 5 % away from the market rests at Submitted until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.sim.config import SimConfig
from bridge.sim.market import instrument

log = logging.getLogger(__name__)

Element = dict[str, Any]
TERMINAL = frozenset({"Filled", "Cancelled"})
REST_FILTERS = {
    "inactive": "Inactive",
    "pending_submit": "PendingSubmit",
    "pre_submitted": "PreSubmitted",
    "submitted": "Submitted",
    "filled": "Filled",
    "pending_cancel": "PendingCancel",
    "cancelled": "Cancelled",
}
_COLORS = {
    "PendingSubmit": {"fgColor": "#3399CC"},
    "PreSubmitted": {"bgColor": "#FFFFFF", "fgColor": "#997EE5"},
    "Submitted": {"bgColor": "#000000", "fgColor": "#00F000"},
    "Filled": {"bgColor": "#000000", "fgColor": "#FFFFFF"},
    "Cancelled": {"bgColor": "#FFFFFF", "fgColor": "#AA0000"},
}


@dataclass(slots=True)
class SimRecord:
    """What the simulated gateway created: orders (latest full state), every ``sor`` element it
    produced, and every execution (final form, with commission), whether or not a socket saw them."""

    orders: dict[int, Element] = field(default_factory=dict)
    order_updates: list[Element] = field(default_factory=list)
    executions: list[Element] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "orders": list(self.orders.values()),
            "order_updates": self.order_updates,
            "executions": self.executions,
        }


def _ib_time(epoch_s: float) -> str:
    return time.strftime("%y%m%d%H%M%S", time.gmtime(epoch_s))


def _qty(value: float) -> float:
    return float(round(value, 4))


def _size_text(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


class OrderEngine:
    """Gateway-global order book; emits through ``on_sor(elements)`` and ``on_str(execution)``."""

    def __init__(
        self,
        config: SimConfig,
        rng: random.Random,
        last_price: Callable[[int], float],
        on_sor: Callable[[list[Element]], None],
        on_str: Callable[[Element], None],
    ) -> None:
        self._config = config
        self._rng = rng
        self._last_price = last_price
        self._on_sor = on_sor
        self._on_str = on_str
        self.record = SimRecord()
        self._next_id = 912_091_175 + rng.randint(0, 10_000)
        self._next_exec = 0x1390E + rng.randint(0, 1000)
        self._pending_replies: dict[str, tuple[str, dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seed_history()

    # ------------------------------------------------------------------------------ REST side
    def place(self, account: str, body: dict[str, Any]) -> tuple[int, Any]:
        """``POST /iserver/account/{acct}/orders``: a question first, or the placed order."""
        orders = body.get("orders")
        if not isinstance(orders, list) or not orders or not isinstance(orders[0], dict):
            return 400, {"error": "Bad Request: orders missing", "statusCode": 400}
        request = orders[0]
        if "conid" not in request and "conidex" not in request:
            return 400, {"error": "Bad Request: conid missing", "statusCode": 400}
        if self._config.order_confirmation:
            reply_id = str(uuid.UUID(int=self._rng.getrandbits(128)))
            self._pending_replies[reply_id] = (account, request)
            question = {
                "id": reply_id,
                "message": ["You are submitting an order without market data. We strongly recommend "
                            "against this as it may result in erroneous and unexpected trades.\nAre you sure "
                            "you want to submit this order?"],
                "isSuppressed": False,
                "messageIds": ["o354"],
            }
            return 200, [question]
        return 200, [self._submit(account, request)]

    def reply(self, reply_id: str, confirmed: bool) -> tuple[int, Any]:
        pending = self._pending_replies.pop(reply_id, None)
        if pending is None:
            return 400, {"error": f"Reply ID {reply_id} not found", "statusCode": 400}
        if not confirmed:
            return 200, {"error": "Order was not confirmed"}
        return 200, [self._submit(*pending)]

    def cancel(self, account: str, order_id: int) -> tuple[int, Any]:
        order = self.record.orders.get(order_id)
        if order is None or order["status"] in TERMINAL:
            return 400, {"error": f"OrderID {order_id} doesn't exist or is not active", "statusCode": 400}
        self._spawn(self._cancel_lifecycle(order))
        return 200, {"msg": "Request was submitted", "order_id": order_id, "conid": order["conid"],
                     "account": account}

    def rest_orders(self, filters: list[str]) -> dict[str, Any]:
        wanted = {REST_FILTERS.get(f.strip().lower(), f.strip()) for f in filters if f.strip()}
        orders = [dict(o) for o in self.record.orders.values() if not wanted or o["status"] in wanted]
        return {"filters": filters, "orders": orders, "snapshot": True}

    def rest_trades(self, days: int) -> list[Element]:
        since_ms = (time.time() - max(1, days) * 86400) * 1000
        return [dict(e) for e in self.record.executions if e["trade_time_r"] >= since_ms]

    def history(self, days: int) -> list[Element]:
        return self.rest_trades(days)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _submit(self, account: str, request: dict[str, Any]) -> dict[str, Any]:
        order = self._new_order(account, request)
        self.record.orders[order["orderId"]] = order
        self._spawn(self._lifecycle(order))
        return {"order_id": str(order["orderId"]), "order_status": "Submitted", "encrypt_message": "1"}

    def _new_order(self, account: str, request: dict[str, Any]) -> Element:
        conid = int(request.get("conid") or str(request.get("conidex", "0")).split("@")[0] or 0)
        inst = instrument(conid)
        order_type = str(request.get("orderType", "MKT")).upper()
        side = str(request.get("side", "BUY")).upper()
        qty = _qty(float(request.get("quantity", 1)))
        price = request.get("price")
        kind = {"LMT": ("LIMIT", "Limit"), "STP": ("STOP", "Stop")}.get(order_type, ("MARKET", "Market"))
        tif = str(request.get("tif", "DAY")).upper()
        now = time.time()
        self._next_id += 1
        price_text = "" if price is None else f"{float(price):.2f}"
        verb = "Buy" if side == "BUY" else "Sell"
        desc = f"{verb} {_size_text(qty)} {inst.symbol} {kind[1]}" + (f" {price_text}" if price_text else "")
        order: Element = {
            "acct": account, "conidex": str(conid), "conid": conid, "account": account,
            "orderId": self._next_id, "cashCcy": "USD", "sizeAndFills": f"0/{_size_text(qty)}",
            "orderDesc": f"{desc}, {tif.title()}", "description1": inst.symbol, "ticker": inst.symbol,
            "secType": "STK", "listingExchange": inst.listing_exchange, "remainingQuantity": qty,
            "filledQuantity": 0.0, "totalSize": qty, "companyName": inst.company, "status": "Inactive",
            "order_ccp_status": "Pending Submit", "outsideRTH": bool(request.get("outsideRTH", False)),
            "origOrderType": kind[0], "supportsTaxOpt": "1", "lastExecutionTime": _ib_time(now),
            "orderType": kind[1], "bgColor": "#000000", "fgColor": "#AFAFAF", "isEventTrading": "0",
            "price": price_text, "timeInForce": tif, "lastExecutionTime_r": int(now * 1000), "side": side,
        }
        if request.get("cOID"):
            order["order_ref"] = str(request["cOID"])
        return order

    def _emit(self, order: Element, elements: list[Element]) -> None:
        for element in elements:
            order.update(element)
        self.record.order_updates.extend(dict(e) for e in elements)
        self._on_sor(elements)

    def _status(self, order: Element, status: str, ccp: str | None = None) -> Element:
        element: Element = {"acct": order["acct"], "orderId": order["orderId"], "status": status}
        if ccp is not None:
            element["order_ccp_status"] = ccp
        element.update(_COLORS.get(status, {}))
        return element

    async def _lifecycle(self, order: Element) -> None:
        step = self._config.order_step_s
        self._emit(order, [dict(order)])
        await asyncio.sleep(step)
        self._emit(order, [{"acct": order["acct"], "conidex": order["conidex"], "conid": order["conid"],
                            "orderId": order["orderId"], "isEventTrading": "0"}])
        for status, ccp in (("PendingSubmit", None), ("PreSubmitted", None), ("Submitted", "Submitted")):
            await asyncio.sleep(step)
            if order["status"] in ("PendingCancel", "Cancelled"):
                return
            self._emit(order, [self._status(order, status, ccp)])
        if not self._marketable(order):
            return
        await self._fill(order, step)

    def _marketable(self, order: Element) -> bool:
        if order["orderType"] != "Limit" or not order["price"]:
            return True
        limit, market = float(order["price"]), self._last_price(order["conid"])
        return abs(limit - market) <= market * 0.05

    async def _fill(self, order: Element, step: float) -> None:
        total = order["totalSize"]
        parts = max(1, min(self._config.fill_parts, int(total) if total >= 1 else 1))
        sizes = [_qty(total / parts)] * (parts - 1)
        sizes.append(_qty(total - sum(sizes)))
        filled, notional = 0.0, 0.0
        for index, size in enumerate(sizes):
            await asyncio.sleep(step)
            if order["status"] in ("PendingCancel", "Cancelled"):
                return
            price = self._fill_price(order)
            filled, notional = _qty(filled + size), notional + size * price
            remaining = _qty(total - filled)
            delta: Element = {"acct": order["acct"], "orderId": order["orderId"],
                              "sizeAndFills": f"{_size_text(filled)}/{_size_text(remaining)}",
                              "remainingQuantity": remaining, "filledQuantity": filled}
            if index % 2 == 0:
                delta["avgPrice"] = f"{notional / filled:.2f}"
            elements = [delta]
            if remaining <= 0:
                elements.append(self._filled_element(order, filled, notional / filled, price))
            self._emit(order, elements)
            self._execute(order, size, price)

    def _filled_element(self, order: Element, filled: float, avg: float, price: float) -> Element:
        now = time.time()
        verb = "Bought" if order["side"] == "BUY" else "Sold"
        element = self._status(order, "Filled", "Filled")
        element.update({
            "sizeAndFills": _size_text(filled), "remainingQuantity": 0.0, "filledQuantity": filled,
            "orderDesc": f"{verb} {_size_text(filled)} {order['orderType']} {price:.2f}, "
                         f"{order['timeInForce'].title()}",
            "avgPrice": f"{avg:.2f}", "price": round(price, 2),
            "lastExecutionTime": _ib_time(now), "lastExecutionTime_r": int(now * 1000),
        })
        return element

    def _fill_price(self, order: Element) -> float:
        market = self._last_price(order["conid"])
        if order["orderType"] == "Limit" and order["price"]:
            limit = float(order["price"])
            return min(limit, market) if order["side"] == "BUY" else max(limit, market)
        return round(market, 2)

    async def _cancel_lifecycle(self, order: Element) -> None:
        step = self._config.order_step_s
        await asyncio.sleep(step)
        if order["status"] in TERMINAL:
            return
        full = dict(order)
        full.update(status="PendingCancel", order_ccp_status="Submitted")
        self._emit(order, [full])
        await asyncio.sleep(step)
        self._emit(order, [self._status(order, "Cancelled", "Cancelled")])

    # ------------------------------------------------------------------------------ executions
    def _execute(self, order: Element, size: float, price: float, when_s: float | None = None) -> None:
        when = time.time() if when_s is None else when_s
        self._next_exec += 1
        inst = instrument(order["conid"])
        buy = order["side"] == "BUY"
        execution: Element = {
            "execution_id": f"{self._next_exec:08x}.69f21453.01.01", "symbol": inst.symbol,
            "supports_tax_opt": "1", "side": "B" if buy else "S",
            "order_description": f"{'Bot' if buy else 'Sld'} {_size_text(size)} @ {price:.2f} on ISLAND",
            "trade_time": time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(when)),
            "trade_time_r": int(when * 1000), "size": size, "price": f"{price:.2f}", "exchange": "ISLAND",
            "net_amount": round(size * price, 2), "account": order["acct"], "accountCode": order["acct"],
            "account_allocation_name": order["acct"], "company_name": inst.company,
            "contract_description_1": inst.symbol, "sec_type": "STK",
            "listing_exchange": inst.listing_exchange, "conid": order["conid"],
            "conidEx": str(order["conid"]),
            "position": _size_text(size), "clearing_id": "IB", "clearing_name": "IB",
            "liquidation_trade": "0", "is_event_trading": "0", "order_id": order["orderId"],
        }
        if "order_ref" in order:
            execution["order_ref"] = order["order_ref"]
        final = dict(execution, commission=f"{max(1.0, size * 0.005):.2f}")
        self.record.executions.append(final)
        if when_s is None:
            self._on_str(execution)
            self._on_str(dict(final))

    def _seed_history(self) -> None:
        """Two executions from two days ago, so a fresh ``str`` subscription has history to send."""
        when = time.time() - 2 * 86400
        for conid, side in ((265598, "BUY"), (8314, "SELL")):
            self._next_id += 1
            order = {"acct": self._config.account, "orderId": self._next_id, "conid": conid, "side": side}
            self._execute(order, 10.0, instrument(conid).base_price, when_s=when)
