"""Orders and executions (pure): sparse ``sor`` deltas merged per (account, orderId);
executions deduplicated by ``execution_id`` (reference §2.4, §2.5, §5).

The same merge serves live frames and REST snapshots taken after a gap
(``reconciled=True``): a REST row that changes nothing emits nothing, and an
execution already published is not published again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from bridge.events import Control, ControlKind, Event, Execution, Order
from bridge.ingest.fields import ElementError, Unparsed, to_bool, to_float, to_int, to_text

Parser = Callable[[Any], Any]

# gateway key -> (event field, parser). Live ``sor`` and REST ``/iserver/account/orders`` share most names.
ORDER_KEYS: dict[str, tuple[str, Parser]] = {
    "status": ("status", to_text),
    "order_ccp_status": ("ccp_status", to_text),
    "conid": ("conid", to_int),
    "conidex": ("conid_ex", to_text),
    "conidEx": ("conid_ex", to_text),
    "ticker": ("symbol", to_text),
    "secType": ("sec_type", to_text),
    "listingExchange": ("listing_exchange", to_text),
    "companyName": ("company_name", to_text),
    "orderDesc": ("description", to_text),
    "side": ("side", to_text),
    "orderType": ("order_type", to_text),
    "origOrderType": ("orig_order_type", to_text),
    "timeInForce": ("time_in_force", to_text),
    "outsideRTH": ("outside_rth", to_bool),
    "price": ("price", to_float),
    "avgPrice": ("avg_price", to_float),
    "totalSize": ("total_size", to_float),
    "filledQuantity": ("filled_quantity", to_float),
    "remainingQuantity": ("remaining_quantity", to_float),
    "sizeAndFills": ("size_and_fills", to_text),
    "order_ref": ("order_ref", to_text),
    "cashCcy": ("cash_ccy", to_text),
    "lastExecutionTime_r": ("last_execution_time_ms", to_int),
}
_ORDER_IDENTITY = frozenset({"acct", "account", "orderId", "order_id", "topic"})

EXECUTION_KEYS: dict[str, tuple[str, Parser]] = {
    "account": ("account", to_text),
    "accountCode": ("account", to_text),
    "order_id": ("order_id", to_int),
    "conid": ("conid", to_int),
    "conidEx": ("conid_ex", to_text),
    "conidex": ("conid_ex", to_text),
    "symbol": ("symbol", to_text),
    "side": ("side", to_text),
    "size": ("size", to_float),
    "price": ("price", to_float),
    "commission": ("commission", to_float),
    "net_amount": ("net_amount", to_float),
    "exchange": ("exchange", to_text),
    "trade_time_r": ("trade_time_ms", to_int),
    "order_ref": ("order_ref", to_text),
    "sec_type": ("sec_type", to_text),
    "listing_exchange": ("listing_exchange", to_text),
    "company_name": ("company_name", to_text),
    "order_description": ("description", to_text),
}
_SIDES = {"B": "BUY", "S": "SELL", "BOT": "BUY", "SLD": "SELL"}


def parse_size_and_fills(text: str | None) -> tuple[float | None, float | None, float | None]:
    """``"100/622"`` -> (filled 100, remaining 622, total None); ``"722"`` -> (None, None, total 722)."""
    if not text:
        return None, None, None
    try:
        if "/" in text:
            filled, remaining = text.split("/", 1)
            return to_float(filled), to_float(remaining), None
        return None, None, to_float(text)
    except Unparsed:
        return None, None, None


def _parse_known(element: Mapping[str, Any], keys: Mapping[str, tuple[str, Parser]]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for raw_key, value in element.items():
        spec = keys.get(raw_key)
        if spec is None:
            continue
        name, parser = spec
        try:
            parsed[name] = parser(value)
        except Unparsed:
            raise ElementError(f"{raw_key}={value!r} is not a valid {name}") from None
    return parsed


TERMINAL_STATUSES = frozenset({"Filled", "Cancelled", "Inactive"})
# How far along its lifecycle a status is (reference §5.1); a REST snapshot taken before live
# frames that already arrived must not move an order back.
STATUS_RANK = {"Inactive": 0, "PendingSubmit": 1, "PreSubmitted": 2, "Submitted": 3, "WarnState": 3,
               "PendingCancel": 4, "PreCancelled": 5, "Filled": 6, "Cancelled": 6}  # fmt: skip


class OrderBook:
    """Merged state of every order seen, keyed by (account, orderId).

    Memory is bounded: past ``max_orders`` the oldest orders in a terminal status
    (Filled, Cancelled, Inactive) are forgotten first; a late delta for a forgotten
    order is then merged from scratch (it still carries its id, account and changes).
    """

    def __init__(self, max_orders: int = 100_000) -> None:
        self._orders: dict[tuple[str, int], dict[str, Any]] = {}
        self._account_of: dict[int, str] = {}
        self._max_orders = max_orders

    def apply(self, element: Mapping[str, Any], reconciled: bool = False) -> Event | None:
        """Merge one ``sor`` element (or REST order row); None when it changed nothing."""
        order_id = to_int(element.get("orderId", element.get("order_id")))
        if order_id is None:
            raise ElementError("order element without orderId")
        account = to_text(element.get("acct", element.get("account"))) or self._account_of.get(order_id)
        if account is None:
            raise ElementError(f"order {order_id} without acct")
        self._account_of[order_id] = account
        is_new = (account, order_id) not in self._orders
        state = self._orders.setdefault((account, order_id), {"extra": {}})
        updates = _parse_known(element, ORDER_KEYS)
        self._fill_from_size_and_fills(updates)
        if reconciled and not is_new and _older_than(updates, state):
            return None
        changed = [name for name, value in updates.items() if state.get(name) != value or name not in state]
        for name in changed:
            state[name] = updates[name]
        extra = state["extra"]
        for raw_key, value in element.items():
            if raw_key not in ORDER_KEYS and raw_key not in _ORDER_IDENTITY and extra.get(raw_key) != value:
                extra[raw_key] = value
                changed.append(raw_key)
        if not changed and not is_new:
            return None
        if is_new and len(self._orders) > self._max_orders:
            self._forget_finished()
        fields = {k: v for k, v in state.items() if k != "extra"}
        return Order(account, order_id, tuple(changed), reconciled, extra=dict(extra), **fields)

    def _forget_finished(self) -> None:
        """Drop the oldest tenth of terminal orders (dicts keep insertion order)."""
        budget = max(1, self._max_orders // 10)
        finished = [key for key, state in self._orders.items() if state.get("status") in TERMINAL_STATUSES]
        for key in finished[:budget]:
            del self._orders[key]
            if self._account_of.get(key[1]) == key[0]:
                del self._account_of[key[1]]

    def __len__(self) -> int:
        return len(self._orders)

    @staticmethod
    def _fill_from_size_and_fills(updates: dict[str, Any]) -> None:
        filled, remaining, total = parse_size_and_fills(updates.get("size_and_fills"))
        if filled is not None:
            updates.setdefault("filled_quantity", filled)
        if remaining is not None:
            updates.setdefault("remaining_quantity", remaining)
        if total is not None:
            updates.setdefault("total_size", total)


def _older_than(row: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """A reconciliation row describing an earlier point of the order's life than what is known."""
    known_filled, row_filled = state.get("filled_quantity"), row.get("filled_quantity")
    if known_filled is not None and row_filled is not None and row_filled < known_filled:
        return True
    known_rank = STATUS_RANK.get(state.get("status") or "", -1)
    row_rank = STATUS_RANK.get(row.get("status") or "", -1)
    return row_rank >= 0 and row_rank < known_rank


class ExecutionLedger:
    """Executions by ``execution_id``; remembers which were published and with what commission."""

    def __init__(self, max_remembered: int = 200_000) -> None:
        self._seen: OrderedDict[str, float | None] = OrderedDict()
        self._max = max_remembered

    def apply(self, element: Mapping[str, Any], reconciled: bool = False) -> Event:
        execution_id = to_text(element.get("execution_id", element.get("executionId")))
        if execution_id is None:
            raise ElementError("execution without execution_id")
        fields = _parse_known(element, EXECUTION_KEYS)
        commission = fields.get("commission")
        if execution_id in self._seen:
            known_commission = self._seen[execution_id]
            if commission is None or known_commission is not None:
                return Control(ControlKind.DUPLICATE, "str", text=execution_id)
        self._remember(execution_id, commission)
        side = fields.get("side")
        if side is not None:
            fields["side"] = _SIDES.get(side, side)
        extra = {k: v for k, v in element.items() if k not in EXECUTION_KEYS and k != "execution_id"}
        return Execution(
            execution_id=execution_id,
            account=fields.pop("account", None),
            order_id=fields.pop("order_id", None),
            reconciled=reconciled,
            extra=extra,
            **fields,
        )

    def _remember(self, execution_id: str, commission: float | None) -> None:
        self._seen[execution_id] = commission
        self._seen.move_to_end(execution_id)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
