"""What the admin endpoints read and steer (:class:`bridge.admin.AdminBackend`): readiness,
``/status``, the subscription list and its changes, and the gauges refreshed at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bridge.config import Settings
from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.spool import Spool
from bridge.errors import SubscriptionRefused
from bridge.events import EventClass
from bridge.gateway.connection import GatewayConnection
from bridge.ingest.session import GatewaySession
from bridge.metrics import BridgeMetrics
from bridge.publisher import Publisher
from bridge.sinks.base import Sink
from bridge.specs import subscription_from_spec, validate_unsubscribe


class BridgeAdmin:
    """The admin view of a running bridge; built by the composition root from its parts."""

    def __init__(
        self,
        settings: Settings,
        metrics: BridgeMetrics,
        session: GatewaySession,
        connection: GatewayConnection,
        buffer: DeliveryBuffer,
        spool: Spool,
        sink: Sink,
        publisher: Publisher,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._refresh = refresh  # called before each scrape (counters tallied off the hot path)
        self.metrics = metrics
        self.session = session
        self.connection = connection
        self.buffer = buffer
        self.spool = spool
        self.sink = sink
        self.publisher = publisher
        self.sink_error: str | None = None  # the last failure to start the sink, until it starts

    def render_metrics(self) -> bytes:
        """Refresh the gauges that are read at scrape time, then render."""
        if self._refresh is not None:
            self._refresh()
        m, buffer = self.metrics, self.buffer
        m.set_buffer_events(EventClass.CRITICAL.value, buffer.critical_events)
        m.set_buffer_events(EventClass.MARKET_DATA.value, len(buffer.market))
        m.set_spool(self.spool.size_bytes, self.spool.segment_count, self.settings.delivery.spool_max_bytes)
        m.set_sink_up(self.sink.name, self.publisher.sink_up)
        last_frame_ns = self.session.last_frame_ns
        if last_frame_ns is not None:
            m.set_heartbeat_age((time.time_ns() - last_frame_ns) / 1e9)
        self._subscription_gauges()
        return m.render()

    def _subscription_gauges(self) -> None:
        desired: dict[str, int] = {}
        live: dict[str, int] = {}
        stale: dict[str, int] = {}
        live_keys, stale_keys = self.session.live_keys(), self.session.stale_keys()
        for sub in self.session.desired():
            desired[sub.channel] = desired.get(sub.channel, 0) + 1
            live[sub.channel] = live.get(sub.channel, 0) + (sub.key in live_keys)
            stale[sub.channel] = stale.get(sub.channel, 0) + (sub.key in stale_keys)
        for channel, count in desired.items():
            self.metrics.set_subscriptions(channel, "desired", count)
            self.metrics.set_subscriptions(channel, "live", live[channel])
            self.metrics.set_stale_subscriptions(channel, stale[channel])

    def readiness(self) -> dict[str, bool]:
        return {
            "gateway_authenticated": self.session.usable,
            "socket_open": self.connection.ready,
            "sink_up": self.publisher.sink_up,
        }

    def status(self) -> dict[str, Any]:
        session, last_frame_ns = self.session, self.session.last_frame_ns
        return {
            "session": {
                "state": session.state.value,
                "usable": session.usable,
                "session_epoch": session.session_epoch,
                "gap_open": session.gap_open,
                "last_frame_age_s": None if last_frame_ns is None else (time.time_ns() - last_frame_ns) / 1e9,
            },
            "subscriptions": self.subscriptions(),
            "buffers": {"memory_events": self.buffer.memory_events, "backpressure": self.buffer.backpressure},
            "spool": {"bytes": self.spool.size_bytes, "segments": self.spool.segment_count},
            "sink": {
                "name": self.sink.name,
                "up": self.publisher.sink_up and self.sink_error is None,
                "last_error": self.sink_error or self.publisher.last_error,
                "published_events": self.publisher.published_events,
                "dead_lettered_events": self.publisher.dead_lettered_events,
            },
        }

    def subscriptions(self) -> list[dict[str, Any]]:
        desired = self.session.desired()
        return [{"key": sub.key, "channel": sub.channel, "subscribe": sub.subscribe} for sub in desired]

    async def subscribe(self, spec: dict[str, Any]) -> dict[str, Any]:
        sub = subscription_from_spec(spec, self.settings, self.session.default_account)
        try:
            replaced = await self.connection.subscribe(sub)
        except SubscriptionRefused:
            self.metrics.subscription_refused(sub.channel, "limit")
            raise
        answer = {"subscribed": sub.key}
        if replaced is not None and replaced.subscribe != sub.subscribe:
            answer["replaced"] = replaced.subscribe  # one ladder per account: the previous one is cancelled
        return answer

    async def unsubscribe(self, spec: dict[str, Any]) -> dict[str, Any]:
        validate_unsubscribe(spec)
        key = spec["key"]
        if not await self.connection.unsubscribe(key):
            raise ValueError(f"no desired subscription with key {key!r}")
        if key.startswith("md:"):
            self.session.normalizer.forget_target(key[3:])  # its frames are now dead letters
        return {"unsubscribed": key}
