"""Spool damage, reported: a metric at once, and a ``spool_damaged`` lifecycle event on the bridge
destination (``ibkr.bridge.v1``) naming the segment, offset, bytes and records lost.

The spool reports a damaged region from inside a read or while it opens, before the delivery
buffer exists or while the buffer is handing out a batch; the events are therefore put on the
buffer afterwards, from the event loop (:meth:`SpoolDamageReporter.connect`, then ``call_soon``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from bridge.delivery.spool_reader import SpoolDamage
from bridge.events import Event, Lifecycle, LifecycleKind
from bridge.metrics import BridgeMetrics


def damage_event(damage: SpoolDamage, at_ms: int) -> Lifecycle:
    """The lifecycle event for one damaged region (``records_lost`` null when nothing tells)."""
    return Lifecycle(
        kind=LifecycleKind.SPOOL_DAMAGED,
        at_ms=at_ms,
        reason=damage.kind,
        detail={
            "segment": damage.segment,
            "offset": damage.offset,
            "bytes": damage.bytes,
            "records_lost": damage.records_lost,
            "missing_segments": len(damage.missing_segments),
            "duplicates": damage.duplicates,
        },
    )


class SpoolDamageReporter:
    """The spool's ``on_damage``: counts each region in the metrics and publishes its event."""

    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics
        self._waiting: list[SpoolDamage] = []
        self._emit: Callable[[Sequence[Event]], None] | None = None
        self._scheduled = False

    def __call__(self, damage: SpoolDamage) -> None:
        self._metrics.spool_damaged(damage.kind, damage.bytes, damage.records_lost or 0)
        self._waiting.append(damage)
        if self._emit is not None and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def connect(self, emit: Callable[[Sequence[Event]], None]) -> None:
        """From now on hand events to ``emit`` (the buffer is ready); the waiting ones first."""
        self._emit = emit
        self._flush()

    def _flush(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        if waiting and self._emit is not None:
            at_ms = time.time_ns() // 1_000_000
            self._emit([damage_event(damage, at_ms) for damage in waiting])
