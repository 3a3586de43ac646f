"""What the event path tells the metrics: frames normalized, lifecycle events, acknowledgement lag.

The adapters between the pure core and :mod:`bridge.metrics` (the only prometheus_client
user): :class:`MeteredNormalizer` counts frames, bytes and events as the normalizer sees them;
:class:`EventMeter` turns the session's lifecycle events into gauges and counters and samples
the lag of acknowledged records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, tzinfo

from bridge.events import (
    AccountLedger,
    AccountProperties,
    AccountSummary,
    AuthStatus,
    Bars,
    BookLadder,
    Bulletin,
    Control,
    DeadLetter,
    Event,
    Execution,
    GatewayErrorMessage,
    Heartbeat,
    Lifecycle,
    LifecycleKind,
    Notification,
    Order,
    Pnl,
    Quote,
    SystemLogin,
    TickleReply,
)
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.metrics import BridgeMetrics
from bridge.sinks.base import Record

log = logging.getLogger(__name__)

LAG_SAMPLES_PER_BATCH = 64

# Frame metrics are labelled by topic family, derived from what the frame produced.
_TOPIC_OF: dict[type[Event], str] = {
    Quote: "smd",
    Order: "sor",
    Execution: "str",
    Pnl: "spl",
    AccountSummary: "ssd",
    AccountLedger: "sld",
    BookLadder: "sbd",
    Bars: "smh",
    AuthStatus: "sts",
    SystemLogin: "system",
    Heartbeat: "system",
    AccountProperties: "act",
    Notification: "ntf",
    Bulletin: "blt",
    TickleReply: "tic",
    GatewayErrorMessage: "error",
    DeadLetter: "invalid",
}


class MeteredNormalizer(Normalizer):
    """The normalizer, counting frames, bytes and events.

    Market-data frames, the bulk of the traffic, are tallied by the normalizer itself and added
    to the metrics by :meth:`flush_metrics` (the bridge calls it once per publish cycle and at
    every scrape); every other frame is counted as it is normalized.
    """

    def __init__(self, metrics: BridgeMetrics, bars_time_zone: tzinfo = UTC) -> None:
        super().__init__(bars_time_zone)
        self._metrics = metrics

    def _tally_frame(self, events: list[Event], data: bytes | str, received_ns: int) -> None:
        first = events[0]
        topic = _TOPIC_OF.get(type(first))
        if topic is None:
            topic = first.topic if isinstance(first, Control) and first.topic else "control"
        self._metrics.frames_received(topic, 1, len(data), received_ns / 1e9)
        for event in events:
            self._metrics.events_normalized(event.TYPE, 1)
            if type(event) is DeadLetter:
                self._metrics.normalize_failed(topic)
                self._metrics.dead_lettered("frame")

    def flush_metrics(self) -> None:
        """Add the market-data frames tallied since the last call to the metrics."""
        frames = self.md_frames
        if frames:
            unchanged = self.md_unchanged_frames
            self._metrics.frames_received("smd", frames, self.md_bytes, self.md_received_ns / 1e9)
            if frames > unchanged:
                self._metrics.events_normalized(Quote.TYPE, frames - unchanged)
            if unchanged:
                self._metrics.events_normalized(Control.TYPE, unchanged)
            self.md_frames = self.md_bytes = self.md_unchanged_frames = 0


class EventMeter:
    """Session lifecycle and authentication events to metrics; acknowledged records to lag."""

    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics
        self.connects = 0

    def observe(self, events: Sequence[Event]) -> None:
        """Every batch of events the bridge takes passes here before it is routed."""
        for event in events:
            cls = type(event)
            if cls is Quote:  # the bulk of the traffic: nothing to observe
                continue
            if cls is Lifecycle:
                self.lifecycle(event)  # type: ignore[arg-type]
            elif cls is AuthStatus and event.competing is not None:  # type: ignore[attr-defined]
                self._metrics.set_competing(event.competing)  # type: ignore[attr-defined]

    def lifecycle(self, event: Lifecycle) -> None:
        m, kind = self._metrics, event.kind
        m.set_session_epoch(event.session_epoch)
        if kind is LifecycleKind.CONNECTED:
            m.connected("startup" if self.connects == 0 else "reconnect")
            m.set_connected(True)
            self.connects += 1
        elif kind is LifecycleKind.DISCONNECTED:
            m.disconnected(reason_label(event.reason))
            m.set_connected(False)
        elif kind is LifecycleKind.AUTHENTICATED:
            m.set_authenticated(True)
            m.set_competing(False)
        elif kind is LifecycleKind.COMPETING:
            m.set_authenticated(False)
            m.set_competing(True)
        elif kind is LifecycleKind.UNAUTHENTICATED:
            # Follows COMPETING too: the competing flag stays until the gateway clears it.
            m.set_authenticated(False)
        else:
            self._gaps_and_subscriptions(event)
        # A failed attempt is reported by the connection (once, then summaries), not once per attempt here.
        level = logging.DEBUG if event.detail.get("attempt_failed") else logging.INFO
        log.log(level, "gateway %s%s", kind.value, f": {event.reason}" if event.reason else "")

    def _gaps_and_subscriptions(self, event: Lifecycle) -> None:
        m, kind = self._metrics, event.kind
        if kind is LifecycleKind.GAP_START:
            m.gap_opened(reason_label(event.reason))
        elif kind is LifecycleKind.GAP_END:
            m.gap_closed()
        elif kind is LifecycleKind.RESUBSCRIBED:
            m.resubscribed("reconnect", int(event.detail.get("subscriptions") or 1))
        elif kind is LifecycleKind.STALE:
            m.resubscribed("stale")
        elif kind is LifecycleKind.RECONCILED:
            for family in ("orders", "executions"):
                count = event.detail.get(family)
                if isinstance(count, int) and count:
                    m.events_reconciled(family, count)

    def acked(self, records: Sequence[Record], ack_ns: int) -> None:
        """Observe how old acknowledged records were, by event class.

        A big batch is sampled at an even stride (at most ``LAG_SAMPLES_PER_BATCH`` observations):
        the histogram keeps its shape and the hot path does not pay ~1 us per record for it.
        """
        ack_ms = ack_ns / 1e6
        lags: dict[str, list[float]] = {}
        stride = max(1, len(records) // LAG_SAMPLES_PER_BATCH)
        for record in records[::stride]:
            if record.updated_ms is not None:
                lag_s = max(0.0, (ack_ms - record.updated_ms) / 1e3)
                lags.setdefault(record.event_class.value, []).append(lag_s)
        for event_class, values in lags.items():
            self._metrics.observe_event_lags(event_class, values)


def reason_label(reason: str | None) -> str:
    """A bounded label: the first word of the reason ("closed 1000: ..." -> "closed")."""
    if not reason:
        return "unknown"
    head = reason.split(":", 1)[0].split(" ", 1)[0].lower()
    return head if head.isidentifier() else "other"
