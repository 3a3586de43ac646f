"""What the simulator emitted (``GET /sim/record``) against what the consumers of the bridge read:
orders and executions lost, reordered, duplicated; market data current and never going back."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fault.harness import Consumed

# --------------------------------------------------------------------------- comparing


def order_states(order_updates: Iterable[dict[str, Any]]) -> dict[int, list[tuple[str, float]]]:
    """Per order, the (status, filled quantity) states the simulator went through, in order."""
    merged: dict[int, dict[str, Any]] = {}
    states: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for element in order_updates:
        order_id = int(element["orderId"])
        current = merged.setdefault(order_id, {})
        current.update(element)
        state = (str(current.get("status")), float(current.get("filledQuantity") or 0.0))
        if not states[order_id] or states[order_id][-1] != state:
            states[order_id].append(state)
    return dict(states)


@dataclass
class Comparison:
    """The simulator's record against what was consumed."""

    orders_expected: int = 0
    executions_expected: int = 0
    orders_lost: list[int] = field(default_factory=list)  # an order with no record at all downstream
    final_states_lost: list[int] = field(default_factory=list)  # the order's last state never arrived
    order_states_lost: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    orders_reordered: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    executions_lost: list[str] = field(default_factory=list)
    commissions_lost: list[str] = field(default_factory=list)
    executions_reordered: list[int] = field(default_factory=list)  # order ids whose fills came out of order
    duplicates: int = 0  # records whose id was consumed more than once
    duplicates_with_other_content: list[str] = field(default_factory=list)
    foreign_ids: list[str] = field(default_factory=list)  # consumed ids the simulator never emitted

    def summary(self) -> dict[str, Any]:
        return {
            "orders_expected": self.orders_expected,
            "executions_expected": self.executions_expected,
            "orders_lost": len(self.orders_lost),
            "order_final_states_lost": len(self.final_states_lost),
            "order_states_lost": sum(len(v) for v in self.order_states_lost.values()),
            "orders_reordered": len(self.orders_reordered),
            "executions_lost": len(self.executions_lost),
            "commissions_lost": len(self.commissions_lost),
            "executions_reordered": len(self.executions_reordered),
            "duplicates": self.duplicates,
            "duplicates_with_other_content": len(self.duplicates_with_other_content),
        }


def _unique(records: Iterable[Consumed]) -> tuple[list[Consumed], int, list[str]]:
    """First copy of each id, in consumed order; the number of extra copies; ids whose copies differ."""
    first: dict[str, Consumed] = {}
    extra = 0
    differing = []
    for record in records:
        seen = first.get(record.id)
        if seen is None:
            first[record.id] = record
            continue
        extra += 1
        if _content(seen) != _content(record):
            differing.append(record.id)
    return list(first.values()), extra, differing


def _content(record: Consumed) -> Any:
    data = {k: v for k, v in record.data.items() if k not in ("reconciled", "changed")}
    return (record.key, record.type, orjson.dumps(data, option=orjson.OPT_SORT_KEYS))


def compare_with_record(
    record: dict[str, Any],
    orders: list[Consumed],
    executions: list[Consumed],
    *,
    every_state: bool,
    order_ids: Iterable[int] | None = None,
) -> Comparison:
    """``every_state``: each intermediate order state must arrive (the gateway socket stayed up);
    otherwise only each order's final state (states missed while blind are not re-sent by the
    gateway; reconciliation publishes the current one)."""
    wanted = set(order_ids) if order_ids is not None else {int(o["orderId"]) for o in record["orders"]}
    expected = {k: v for k, v in order_states(record["order_updates"]).items() if k in wanted}
    sim_executions = [e for e in record["executions"] if int(e.get("order_id", -1)) in wanted]
    result = Comparison(orders_expected=len(expected), executions_expected=len(sim_executions))

    unique_orders, extra_o, diff_o = _unique(orders)
    unique_execs, extra_e, diff_e = _unique(executions)
    result.duplicates = extra_o + extra_e
    result.duplicates_with_other_content = diff_o + diff_e

    _compare_orders(result, unique_orders, expected, wanted, every_state)
    _compare_executions(result, unique_execs, sim_executions)
    return result


def _compare_orders(
    result: Comparison,
    unique_orders: list[Consumed],
    expected: dict[int, list[tuple[str, float]]],
    wanted: set[int],
    every_state: bool,
) -> None:
    consumed_states: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for r in unique_orders:
        order_id = int(r.data.get("order_id", r.key or -1))
        consumed_states[order_id].append(
            (str(r.data.get("status")), float(r.data.get("filled_quantity") or 0))
        )
        if order_id not in wanted:
            result.foreign_ids.append(r.id)
    for order_id, states in sorted(expected.items()):
        seen = consumed_states.get(order_id, [])
        if not seen:
            result.orders_lost.append(order_id)
            continue
        if states[-1] not in seen:
            result.final_states_lost.append(order_id)
        if every_state:
            missing = [s for s in states if s not in seen]
            if missing:
                result.order_states_lost[order_id] = missing
        positions = [states.index(s) for s in seen if s in states]
        if positions != sorted(positions):
            result.orders_reordered[order_id] = seen


def _compare_executions(
    result: Comparison, unique_execs: list[Consumed], sim_executions: list[dict[str, Any]]
) -> None:
    consumed_exec: dict[str, list[Consumed]] = defaultdict(list)
    for r in unique_execs:
        consumed_exec[str(r.data.get("execution_id"))].append(r)
    by_order: dict[int, list[str]] = defaultdict(list)
    for r in unique_execs:
        if r.data.get("commission") is not None:
            by_order[int(r.data.get("order_id") or -1)].append(str(r.data.get("execution_id")))
    for execution in sim_executions:
        eid = execution["execution_id"]
        copies = consumed_exec.get(eid, [])
        if not copies:
            result.executions_lost.append(eid)
        elif not any(c.data.get("commission") is not None for c in copies):
            result.commissions_lost.append(eid)
    sim_by_order: dict[int, list[str]] = defaultdict(list)
    for execution in sim_executions:
        sim_by_order[int(execution["order_id"])].append(execution["execution_id"])
    for order_id, eids in sim_by_order.items():
        seen = [e for e in by_order.get(order_id, []) if e in eids]
        if seen != [e for e in eids if e in seen]:
            result.executions_reordered.append(order_id)


def per_key_times_never_go_back(records: Iterable[Consumed]) -> dict[str, list[str]]:
    """Keys whose consumed ``updated_ms`` (offset order within a partition) ever decreased: for each,
    ``"<offset>: <newest before> -> <older value>"``. A second copy of an id already consumed is a
    redelivery (at-least-once) that consumers drop by id, not a stale value."""
    last: dict[str, tuple[int, int]] = {}
    backwards: dict[str, list[str]] = {}
    seen: set[str] = set()
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        updated = r.data.get("updated_ms")
        if not isinstance(updated, int) or r.id in seen:
            continue
        seen.add(r.id)
        before, at = last.get(r.key, (0, -1))
        if updated < before:
            backwards.setdefault(r.key, []).append(
                f"offset {r.offset}: {before} (offset {at}) -> {updated} snapshot={r.data.get('snapshot')}"
            )
        else:
            last[r.key] = (updated, r.offset)
    return backwards


def latest_quote_ms(records: Iterable[Consumed]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for r in records:
        updated = r.data.get("updated_ms")
        if isinstance(updated, int):
            latest[r.key] = max(updated, latest.get(r.key, 0))
    return latest


def count_ids(records: Iterable[Consumed]) -> Counter[str]:
    return Counter(r.id for r in records)
