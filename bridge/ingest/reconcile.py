"""What was missed while the session was blind (pure).

After a gap the session asks for a reconcile: the REST copies of orders and trades are merged
into the normalizer's state (what changed becomes an event marked ``reconciled``; what was
already published yields nothing), and executions the socket itself replays from before the
recovery are marked ``reconciled`` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from bridge.events import Event, Execution, Scalar
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.ingest.session_types import NS_PER_MS


class Reconciliation:
    """The resync cutoff and the merge of reconciliation rows."""

    def __init__(self, normalizer: Normalizer) -> None:
        self._normalizer = normalizer
        self._resynced_before_ms: int | None = None

    def requested(self, now_ns: int) -> None:
        """A reconcile was requested at ``now_ns``: executions replayed from before it were missed."""
        self._resynced_before_ms = now_ns // NS_PER_MS

    def mark_resynced(self, events: list[Event]) -> list[Event]:
        """Executions the socket replays (``str`` history) that happened before the session became
        usable were missed while blind: they are published as reconciled, like the REST copies."""
        cutoff_ms = self._resynced_before_ms
        if cutoff_ms is None:
            return events
        return [
            replace(e, reconciled=True)
            if type(e) is Execution
            and not e.reconciled
            and e.trade_time_ms is not None
            and e.trade_time_ms < cutoff_ms
            else e
            for e in events
        ]

    def rows(
        self, gap_id: str | None, orders: Iterable[Mapping[str, Any]], trades: Iterable[Mapping[str, Any]]
    ) -> tuple[list[Event], dict[str, Scalar]]:
        """The events of REST rows that changed something (orders first), and the counts."""
        normalizer = self._normalizer
        order_events = [e for e in map(normalizer.reconcile_order, orders) if e is not None]
        execution_events = [e for e in map(normalizer.reconcile_execution, trades) if e is not None]
        detail: dict[str, Scalar] = {"orders": len(order_events), "executions": len(execution_events)}
        if gap_id is not None:
            detail["gap_id"] = gap_id
        return [*order_events, *execution_events], detail

    @staticmethod
    def failed(gap_id: str | None, error: str) -> dict[str, Scalar]:
        """The detail of a reconcile that could not fetch its rows."""
        detail: dict[str, Scalar] = {"orders": 0, "executions": 0}
        if gap_id is not None:
            detail["gap_id"] = gap_id
        detail["error"] = error
        return detail
