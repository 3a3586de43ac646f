"""Prometheus metrics: the only ``prometheus_client`` user.

Every metric is named ``ibkr_bridge_*``, measured in base units (seconds,
bytes), counters end in ``_total``, and no label ever carries a conid: topic
labels are topic families (``smd``, not ``smd+265598``), destinations are the
configured names (``ibkr.marketdata.v1``), types are CloudEvents types.

Each :class:`BridgeMetrics` owns its own :class:`CollectorRegistry` (with the
process, platform and GC collectors) so tests build fresh instances. Hot-path
methods (:meth:`BridgeMetrics.frames_received`,
:meth:`BridgeMetrics.events_normalized`, :meth:`BridgeMetrics.events_published`)
are called once per batch and reuse pre-bound label children.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from bridge.delivery.spool_reader import DAMAGE_KINDS
from bridge.events import EventClass

__all__ = ["CONTENT_TYPE_LATEST", "PREFIX", "BridgeMetrics", "DeliveryMetrics"]

# ``*_created`` series double the exposition and no dashboard or alert reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "ibkr_bridge_"

# Publish round trips: a local broker answers in ~1 ms, a remote one in tens of ms.
PUBLISH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Gateway ``_updated`` to broker ack: dominated by the gateway's own batching (~0.25-1 s).
LAG_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

DELIVERY_CLASSES = tuple(c.value for c in EventClass)
CONNECT_REASONS = ("startup", "reconnect")
DEAD_LETTER_SOURCES = ("frame", "record")
RECONCILED_FAMILIES = ("orders", "executions")
PUBLISH_ERRORS = ("unavailable", "rejected")


def _package_version() -> str:
    try:
        return metadata.version("ibkr-bridge")
    except metadata.PackageNotFoundError:
        return "unknown"


def topic_family(topic: str) -> str:
    """The bounded label value for a gateway topic: ``smd+265598`` -> ``smd``."""
    return topic.partition("+")[0]


class BridgeMetrics:
    """All of the bridge's metrics on one private registry."""

    def __init__(self, *, version: str | None = None, commit: str = "unknown") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._define_session()
        self._define_flow()
        self._define_delivery()
        self._frames: dict[str, tuple[Counter, Counter, Gauge]] = {}
        self._normalized: dict[str, Counter] = {}
        self._published: dict[tuple[str, str], Counter] = {}
        self._publish_s: dict[str, Histogram] = {}
        self._lag_s: dict[str, Histogram] = {}
        self._prime(version or _package_version(), commit)

    # ------------------------------------------------------------------ definitions

    def _counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(PREFIX + name, doc, tuple(labels), registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, tuple(labels), registry=self.registry)

    def _define_session(self) -> None:
        g, c = self._gauge, self._counter
        self.gateway_authenticated = g("gateway_authenticated", "1 while the gateway session is authorized")
        self.gateway_competing = g("gateway_competing", "1 while another session competes for this login")
        self.gateway_connected = g("gateway_connected", "1 while the gateway websocket is open")
        self.session_epoch = g("session_epoch", "Current gateway session epoch (sessionepoch attribute)")
        self.gateway_connects = c("gateway_connects_total", "Websocket connections opened", ["reason"])
        self.gateway_disconnects = c("gateway_disconnects_total", "Websocket connections lost", ["reason"])
        self.heartbeat_age = g("heartbeat_age_seconds", "Seconds since the last gateway heartbeat")
        self.subscriptions = g(
            "subscriptions",
            "Subscriptions by channel (md, or, ...) and state (desired, live)",
            ["topic", "state"],
        )
        self.stale_subscriptions = g(
            "stale_subscriptions", "Live subscriptions silent beyond session.expected_cadence_s", ["topic"]
        )
        self.resubscribes = c("resubscribes_total", "Subscription requests sent again", ["reason"])
        self.subscriptions_refused = c(
            "subscriptions_refused_total", "Subscriptions refused before reaching the gateway",
            ["topic", "reason"],
        )
        self.gaps = c("gaps_total", "Gaps opened in the event stream", ["reason"])
        self.gap_open = g("gap_open", "1 while a gap is open (no live data)")
        self.reconciled_events = c(
            "reconciled_events_total", "Events re-published by REST reconciliation after a gap", ["family"]
        )

    def _define_flow(self) -> None:
        g, c = self._gauge, self._counter
        self.frames = c("frames_received_total", "Websocket frames received", ["topic"])
        self.received_bytes = c("received_bytes_total", "Websocket payload bytes received", ["topic"])
        self.last_frame = g(
            "last_frame_timestamp_seconds", "Unix time of the last frame received", ["topic"]
        )
        self.normalized = c("events_normalized_total", "Events produced by the normalizer", ["type"])
        self.normalize_errors = c(
            "normalize_errors_total", "Frames the normalizer could not turn into events", ["topic"]
        )

    def _define_delivery(self) -> None:
        g, c = self._gauge, self._counter
        self.published = c(
            "events_published_total", "Events acknowledged by a sink", ["sink", "destination"]
        )
        self.publish_errors = c("publish_errors_total", "Failed publish attempts", ["sink", "error"])
        self.publish_duration = Histogram(
            PREFIX + "publish_duration_seconds",
            "Duration of one acknowledged publish (one batch)",
            ["sink"],
            buckets=PUBLISH_BUCKETS_S,
            registry=self.registry,
        )
        self.event_lag = Histogram(
            PREFIX + "event_lag_seconds",
            "Broker ack time minus the gateway's _updated time",
            ["class"],
            buckets=LAG_BUCKETS_S,
            registry=self.registry,
        )
        self.sink_up = g("sink_up", "1 while the sink accepts publishes", ["sink"])
        self.buffer_events = g("buffer_events", "Events waiting in memory", ["class"])
        self.buffer_capacity = g("buffer_capacity_events", "Configured buffer capacity", ["class"])
        self.conflated = c("conflated_events_total", "Market data events replaced by a newer state")
        self.dropped = c("dropped_events_total", "Events dropped; stays 0 for critical", ["class"])
        self.backpressure_active = g("backpressure_active", "1 while producers wait for space", ["class"])
        self.backpressure_wait = c(
            "backpressure_wait_seconds_total", "Time producers waited for buffer space", ["class"]
        )
        self.spooled = c("spooled_events_total", "Critical events written to the on-disk spool")
        self.replayed = c("replayed_events_total", "Spooled events read back for publishing")
        self.spool_bytes = g("spool_bytes", "Bytes of critical events in the on-disk spool")
        self.spool_segments = g("spool_segments", "Segment files in the on-disk spool")
        self.spool_capacity = g("spool_capacity_bytes", "Disk quota of the spool")
        self.spool_damage = c("spool_damaged_regions_total", "Damaged spool regions, each once", ["kind"])
        self.spool_damaged_bytes = c("spool_damaged_bytes_total", "Unreadable bytes skipped in the spool")
        self.spool_records_lost = c("spool_records_lost_total", "Spooled records lost to damage")
        self.dead_letters = c(
            "dead_letter_events_total", "Frames or records sent to the dead-letter destination", ["source"]
        )
        self.build_info = g(
            "build_info", "Build of the running bridge; always 1", ["version", "commit", "python"]
        )

    def _prime(self, version: str, commit: str) -> None:
        """Create the label children alerts rely on, at 0, so their first increase is seen."""
        self.build_info.labels(version=version, commit=commit, python=platform.python_version()).set(1)
        for reason in CONNECT_REASONS:
            self.gateway_connects.labels(reason=reason)
        for cls in DELIVERY_CLASSES:
            self.dropped.labels(**{"class": cls})
            self.buffer_events.labels(**{"class": cls})
            self.backpressure_wait.labels(**{"class": cls})
        for source in DEAD_LETTER_SOURCES:
            self.dead_letters.labels(source=source)
        for kind in DAMAGE_KINDS:
            self.spool_damage.labels(kind=kind)
        for family in RECONCILED_FAMILIES:
            self.reconciled_events.labels(family=family)

    # ------------------------------------------------------------------ session

    def set_authenticated(self, authenticated: bool) -> None:
        self.gateway_authenticated.set(int(authenticated))

    def set_competing(self, competing: bool) -> None:
        self.gateway_competing.set(int(competing))

    def set_connected(self, connected: bool) -> None:
        self.gateway_connected.set(int(connected))

    def set_session_epoch(self, epoch: int) -> None:
        self.session_epoch.set(epoch)

    def connected(self, reason: str) -> None:
        """A websocket opened; ``reason`` is ``startup`` or ``reconnect``."""
        self.gateway_connects.labels(reason=reason).inc()
        self.gateway_connected.set(1)

    def disconnected(self, reason: str) -> None:
        """A websocket closed; ``reason`` e.g. ``closed``, ``heartbeat_timeout``, ``error``, ``shutdown``."""
        self.gateway_disconnects.labels(reason=reason).inc()
        self.gateway_connected.set(0)

    def set_heartbeat_age(self, age_s: float) -> None:
        self.heartbeat_age.set(age_s)

    def set_subscriptions(self, topic: str, state: str, count: int) -> None:
        """Subscriptions of one channel (``md``, ``or``, ...) in one state (``desired``, ``live``)."""
        self.subscriptions.labels(topic=topic_family(topic), state=state).set(count)

    def set_stale_subscriptions(self, topic: str, count: int) -> None:
        self.stale_subscriptions.labels(topic=topic_family(topic)).set(count)

    def subscription_refused(self, topic: str, reason: str) -> None:
        """A subscription refused, e.g. a sixth concurrent bars request (``reason="limit"``)."""
        self.subscriptions_refused.labels(topic=topic_family(topic), reason=reason).inc()

    def resubscribed(self, reason: str, n: int = 1) -> None:
        """``n`` subscriptions re-sent; ``reason`` e.g. ``reconnect``, ``stale``, ``auth_restored``."""
        self.resubscribes.labels(reason=reason).inc(n)

    def gap_opened(self, reason: str) -> None:
        self.gaps.labels(reason=reason).inc()
        self.gap_open.set(1)

    def gap_closed(self) -> None:
        self.gap_open.set(0)

    def events_reconciled(self, family: str, n: int) -> None:
        """``n`` events of ``family`` (``orders``, ``executions``) re-published after a gap."""
        self.reconciled_events.labels(family=family).inc(n)

    # ------------------------------------------------------------------ frames and events (hot path)

    def frames_received(self, topic: str, n: int, nbytes: int, at_s: float | None = None) -> None:
        """``n`` frames of ``nbytes`` in total arrived on ``topic``; ``at_s`` defaults to now."""
        family = topic_family(topic)
        children = self._frames.get(family)
        if children is None:
            children = (
                self.frames.labels(topic=family),
                self.received_bytes.labels(topic=family),
                self.last_frame.labels(topic=family),
            )
            self._frames[family] = children
        frames, received, last = children
        frames.inc(n)
        received.inc(nbytes)
        last.set(time.time() if at_s is None else at_s)

    def events_normalized(self, event_type: str, n: int) -> None:
        child = self._normalized.get(event_type)
        if child is None:
            child = self._normalized[event_type] = self.normalized.labels(type=event_type)
        child.inc(n)

    def normalize_failed(self, topic: str, n: int = 1) -> None:
        self.normalize_errors.labels(topic=topic_family(topic)).inc(n)

    # ------------------------------------------------------------------ delivery

    def _publish_child(self, sink: str) -> Histogram:
        child = self._publish_s.get(sink)
        if child is None:
            child = self._publish_s[sink] = self.publish_duration.labels(sink=sink)
            for error in PUBLISH_ERRORS:
                self.publish_errors.labels(sink=sink, error=error)
        return child

    def events_published(self, sink: str, destination: str, n: int) -> None:
        """``n`` events acknowledged on ``destination`` (the configured name, never per key)."""
        key = (sink, destination)
        child = self._published.get(key)
        if child is None:
            child = self._published[key] = self.published.labels(sink=sink, destination=destination)
        child.inc(n)

    def publish_succeeded(self, sink: str, duration_s: float) -> None:
        """One batch acknowledged after ``duration_s``."""
        self._publish_child(sink).observe(duration_s)
        self.sink_up.labels(sink=sink).set(1)

    def publish_failed(self, sink: str, error: str) -> None:
        """One publish attempt failed: ``error`` is ``unavailable`` (retryable) or ``rejected``."""
        self._publish_child(sink)
        self.publish_errors.labels(sink=sink, error=error).inc()
        if error == "unavailable":
            self.sink_up.labels(sink=sink).set(0)

    def set_sink_up(self, sink: str, up: bool) -> None:
        self._publish_child(sink)
        self.sink_up.labels(sink=sink).set(int(up))

    def observe_event_lags(self, event_class: str, lags_s: Iterable[float]) -> None:
        """Ack time minus gateway ``_updated`` for each acknowledged event that carried one."""
        child = self._lag_s.get(event_class)
        if child is None:
            child = self._lag_s[event_class] = self.event_lag.labels(**{"class": event_class})
        for lag_s in lags_s:
            child.observe(lag_s)

    def set_buffer_events(self, event_class: str, events: int) -> None:
        self.buffer_events.labels(**{"class": event_class}).set(events)

    def set_buffer_capacity(self, event_class: str, capacity_events: int) -> None:
        self.buffer_capacity.labels(**{"class": event_class}).set(capacity_events)

    def events_conflated(self, n: int = 1) -> None:
        self.conflated.inc(n)

    def events_dropped(self, event_class: str, n: int = 1) -> None:
        self.dropped.labels(**{"class": event_class}).inc(n)

    def events_spooled(self, n: int) -> None:
        self.spooled.inc(n)

    def events_replayed(self, n: int) -> None:
        self.replayed.inc(n)

    def set_backpressure(self, event_class: str, active: bool) -> None:
        self.backpressure_active.labels(**{"class": event_class}).set(int(active))

    def backpressure_waited(self, event_class: str, seconds: float) -> None:
        self.backpressure_wait.labels(**{"class": event_class}).inc(seconds)

    def set_spool(self, nbytes: int, segments: int, capacity_bytes: int | None = None) -> None:
        self.spool_bytes.set(nbytes)
        self.spool_segments.set(segments)
        if capacity_bytes is not None:
            self.spool_capacity.set(capacity_bytes)

    def spool_damaged(self, kind: str, nbytes: int, records_lost: int) -> None:
        """One damaged spool region (see :class:`~bridge.delivery.spool_reader.SpoolDamage`)."""
        self.spool_damage.labels(kind=kind).inc()
        self.spool_damaged_bytes.inc(nbytes)
        self.spool_records_lost.inc(records_lost)

    def dead_lettered(self, source: str, n: int = 1) -> None:
        """``n`` items sent to the DLQ; ``source`` is ``frame`` (gateway) or ``record`` (sink)."""
        self.dead_letters.labels(source=source).inc(n)

    def delivery_observer(self, sink: str) -> DeliveryMetrics:
        """The ``DeliveryObserver`` (bridge.delivery.buffer) for one sink's buffer and publisher."""
        return DeliveryMetrics(self, sink)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The text exposition format for ``/metrics`` (content type :data:`CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)

    def exported_names(self) -> frozenset[str]:
        """Every sample name this registry can expose (``_total``, ``_bucket``, ... included)."""
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "summary": ("_count", "_sum"),
            "info": ("_info",),
        }
        names: set[str] = set()
        for family in self.registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
        return frozenset(names)


class DeliveryMetrics:
    """Implements ``bridge.delivery.buffer.DeliveryObserver`` for the publisher of one ``sink``."""

    __slots__ = ("_metrics", "sink")

    def __init__(self, metrics: BridgeMetrics, sink: str) -> None:
        self._metrics = metrics
        self.sink = sink
        metrics.set_sink_up(sink, True)

    def conflated(self, event_class: EventClass, count: int) -> None:
        self._metrics.events_conflated(count)

    def dropped(self, event_class: EventClass, count: int) -> None:
        self._metrics.events_dropped(event_class.value, count)

    def spooled(self, count: int) -> None:
        self._metrics.events_spooled(count)

    def replayed(self, count: int) -> None:
        self._metrics.events_replayed(count)

    def published(self, destination: str, count: int) -> None:
        self._metrics.events_published(self.sink, destination, count)

    def publish_failed(self, error: str, retryable: bool) -> None:
        self._metrics.publish_failed(self.sink, "unavailable" if retryable else "rejected")

    def publish_duration(self, seconds: float, count: int) -> None:
        self._metrics.publish_succeeded(self.sink, seconds)

    def dead_lettered(self, destination: str, count: int) -> None:
        self._metrics.dead_lettered("record", count)

    def buffer_depth(self, event_class: EventClass, depth: int) -> None:
        self._metrics.set_buffer_events(event_class.value, depth)

    def spool_usage(self, size_bytes: int, segments: int) -> None:
        self._metrics.set_spool(size_bytes, segments)

    def backpressure(self, on: bool) -> None:
        """The buffer blocks the gateway reader only for critical events."""
        self._metrics.set_backpressure(EventClass.CRITICAL.value, on)
