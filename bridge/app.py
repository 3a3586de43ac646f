"""Composition root: builds every part from Settings, runs them, drains on stop.

The only module that names concrete sinks. Data flow:

    GatewayConnection (socket) -> GatewaySession (normalizer, session rules) -> Bridge.on_events
    -> Pipeline (route + encode) -> DeliveryBuffer (conflate market data / write critical through
    to the spool) -> Publisher -> Sink

Metrics hang off the side: :mod:`bridge.metering` counts what the normalizer and the session
report, :mod:`bridge.admin_backend` serves what the admin endpoints read.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from zoneinfo import ZoneInfo

from aiohttp import web

from bridge.admin import AdminLimits, build_admin_app, start_admin
from bridge.admin_backend import BridgeAdmin
from bridge.backoff import PUBLISH_RETRY, SINK_START_RETRY, Backoff
from bridge.codec import EnvelopeContext
from bridge.config import Settings, secret
from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.spool import Spool
from bridge.delivery.spool_identity import SinkIdentity
from bridge.delivery.spool_identity import claim as claim_spool
from bridge.delivery.state_keeper import StateKeeper
from bridge.errors import BridgeError, ConfigError, SinkError
from bridge.events import Event, EventClass
from bridge.gateway.connection import ConnectionSettings, GatewayConnection
from bridge.gateway.oauth import OAuthConsumer, load_key_set
from bridge.gateway.rest import GatewayRest, RestSettings
from bridge.ingest.session import GatewaySession
from bridge.metering import EventMeter, MeteredNormalizer
from bridge.metrics import BridgeMetrics
from bridge.pipeline import Pipeline
from bridge.publisher import Publisher
from bridge.routing import DEFAULT_DESTINATIONS, Router
from bridge.sinks.base import Record, Sink
from bridge.sinks.kafka import KafkaSink, KafkaSinkOptions
from bridge.sinks.memory import MemorySink
from bridge.sinks.redis import RedisSink, RedisSinkOptions
from bridge.sinks.stdout import StdoutSink
from bridge.specs import books_without_account, desired_subscriptions
from bridge.spool_damage import SpoolDamageReporter

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 100)  # see Bridge.run

SINK_SUMMARY_INTERVAL_S = 60.0  # while the sink stays unreachable: one summary line per minute


def router_for(settings: Settings) -> Router:
    state = [family for family, on in (("marketdata", settings.state.marketdata),
                                       ("orders", settings.state.orders)) if on]  # fmt: skip
    return Router(settings.destinations, settings.account_aliases, state_families=state)


def kafka_options(settings: Settings) -> KafkaSinkOptions:
    k = settings.sink.kafka
    router = router_for(settings)
    state_topics = tuple(sorted(router.state_destinations().items()))
    destinations = sorted({*router.static_destinations(), *(state for _, state in state_topics)})
    return KafkaSinkOptions(
        bootstrap_servers=settings.sink.kafka_bootstrap,
        client_id=k.client_id,
        enable_idempotence=k.enable_idempotence,
        compression=k.compression,
        linger_ms=k.linger_ms,
        max_batch_bytes=k.max_batch_bytes,
        request_timeout_ms=k.request_timeout_ms,
        header_mode=k.header_mode,
        sasl_mechanism=k.sasl_mechanism,
        sasl_username=k.sasl_username,
        sasl_password=secret(k.sasl_password, k.sasl_password_file),
        tls=k.tls,
        tls_cafile=str(k.tls_cafile) if k.tls_cafile else None,
        create_topics=tuple(destinations) if k.create_topics else (),
        state_topics=state_topics,
        topic_partitions=k.topic_partitions,
        topic_replication=k.topic_replication,
    )


def redis_options(settings: Settings) -> RedisSinkOptions:
    r = settings.sink.redis
    retention_ms = int(r.minid_age_s * 1000) if r.minid_age_s else None
    return RedisSinkOptions(
        url=settings.sink.url,
        username=r.username,
        password=secret(r.password, r.password_file),
        maxlen=r.maxlen_events if retention_ms is None else None,
        retention_ms=retention_ms,
        state_hashes=tuple(sorted(router_for(settings).state_destinations().items())),
    )


def build_sink(settings: Settings) -> Sink:
    """The one place concrete sinks are named."""
    kind = settings.sink.kind
    if kind == "kafka":
        return KafkaSink(kafka_options(settings))
    if kind == "redis":
        return RedisSink(redis_options(settings))
    if kind == "memory":
        return MemorySink()
    return StdoutSink()


def spool_owner(settings: Settings) -> SinkIdentity:
    """The identity of the sink the spool's records are for: kind, servers and destinations."""
    return SinkIdentity.of(settings.sink.url, {**DEFAULT_DESTINATIONS, **settings.destinations}.values())


class Bridge:
    """Everything wired together; ``run()`` until ``stop()``, then drain."""

    def __init__(
        self, settings: Settings, sink: Sink | None = None, metrics: BridgeMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or BridgeMetrics()
        self.sink = sink or build_sink(settings)
        self.normalizer = MeteredNormalizer(self.metrics, ZoneInfo(settings.gateway.bars_time_zone))
        self.normalizer.restrict_to_subscribed()  # quote state only for the targets subscribed
        router = router_for(settings)
        self.pipeline = Pipeline(
            router,
            EnvelopeContext(source=f"urn:ibkr-bridge:{settings.instance}"),
            self.normalizer.forget_quote,
        )
        self.meter = EventMeter(self.metrics)
        delivery = settings.delivery
        self.spool_damage = SpoolDamageReporter(self.metrics)  # metric now, lifecycle event once started
        self.spool = Spool(
            delivery.spool_dir,
            max_bytes=delivery.spool_max_bytes,
            segment_bytes=delivery.spool_segment_bytes,
            fsync="interval_ms" if delivery.spool_fsync == "interval" else delivery.spool_fsync,
            fsync_interval_ms=delivery.spool_fsync_interval_ms,
            on_damage=self.spool_damage,
        )
        try:  # records spooled for another sink are never drained into this one
            claim_spool(self.spool, spool_owner(settings))
        except ConfigError:
            self.spool.close()
            raise
        observer = self.metrics.delivery_observer(self.sink.name)
        self.buffer = DeliveryBuffer(
            max_market_events=delivery.max_market_data_events,
            max_critical_events=delivery.max_critical_events,
            spool=self.spool,
            observer=observer,
        )
        retention_s = settings.state.finished_order_retention_s
        self.state = StateKeeper(router, self.buffer, self.pipeline.envelope, retention_s)
        retry = Backoff(PUBLISH_RETRY, random.Random())
        self.publisher = Publisher(
            self.sink,
            self.buffer,
            max_batch_events=delivery.max_batch_events,
            linger_ms=delivery.linger_ms,
            delays=retry.delay_for,
            dead_letter_destination=self.pipeline.router.destination_of("dlq"),
            envelope=self.pipeline.envelope,
            observer=observer,
            on_acked=self._acked,
        )
        session_settings = settings.session
        if session_settings.reauthenticate is None:  # unset: on over OAuth (only ssodh/init reopens it)
            session_settings = replace(session_settings, reauthenticate=settings.gateway.mode == "oauth")
        self.session = GatewaySession(
            session_settings,
            desired_subscriptions(settings, settings.gateway.account),
            normalizer=self.normalizer,
            books_without_account=books_without_account(settings),
        )
        gateway = settings.gateway
        ca_file = str(gateway.ca_file) if gateway.ca_file else None
        oauth_file = gateway.oauth_file if gateway.mode == "oauth" else None
        self.rest = GatewayRest(
            RestSettings(base_url=f"{gateway.url}/v1/api", insecure_tls=gateway.insecure_tls,
                         ca_file=ca_file),
            OAuthConsumer(load_key_set(oauth_file)) if oauth_file is not None else None,
        )
        self.connection = GatewayConnection(
            self.session,
            self.rest,
            self.on_events,
            ConnectionSettings(
                ws_url=gateway.ws_url, insecure_tls=gateway.insecure_tls, ca_file=ca_file,
                compete=gateway.compete, session_id=secret(gateway.session, gateway.session_file),
                read_pace_s=gateway.read_pace_ms / 1000,
            ),
        )
        self.admin = BridgeAdmin(
            settings, self.metrics, self.session, self.connection, self.buffer, self.spool, self.sink,
            self.publisher, self.state, refresh=self.normalizer.flush_metrics,
        )  # fmt: skip
        self._ack_listeners: list[Callable[[Sequence[Record], int], None]] = []
        self._stop = asyncio.Event()
        self._admin_runner: web.AppRunner | None = None
        self._sink_starter: asyncio.Task[None] | None = None
        self.fatal_error: BaseException | None = None
        self.admin_port: int | None = None
        for event_class in (EventClass.MARKET_DATA, EventClass.CRITICAL):
            market = event_class is EventClass.MARKET_DATA
            capacity = delivery.max_market_data_events if market else delivery.max_critical_events
            self.metrics.set_buffer_capacity(event_class.value, capacity)
            self.metrics.set_backpressure(event_class.value, False)

    # ------------------------------------------------------------------------------ event path

    async def on_events(self, events: Sequence[Event], received_ns: int) -> None:
        """The session's output: metered, routed and encoded, then buffered for the publisher."""
        self.meter.observe(events)
        records = self.pipeline.records(self.state.observe(events), received_ns)
        if records:
            self.buffer.put_many(records)
            if self.buffer.backpressure:
                await self.buffer.wait_writable()
            else:
                await self.publisher.keep_pace()

    def _put_events(self, events: Sequence[Event]) -> None:
        """Events the bridge makes itself (spool damage), routed and buffered like the session's."""
        self.buffer.put_many(self.pipeline.records(events, time.time_ns()))

    def add_ack_listener(self, listener: Callable[[Sequence[Record], int], None]) -> None:
        """Also call ``listener(records, ack_ns)`` for every acknowledged batch (the demo's live view)."""
        self._ack_listeners.append(listener)

    def _acked(self, records: Sequence[Record], ack_ns: int) -> None:
        self.normalizer.flush_metrics()  # once per publish cycle, not per read (and at every scrape)
        for listener in self._ack_listeners:
            listener(records, ack_ns)
        self.meter.acked(records, ack_ns)

    # ------------------------------------------------------------------------------ running

    async def start(self) -> None:
        try:
            await self.sink.start()
        except SinkError as exc:
            if not exc.retryable:
                raise
            # A broker that is down at start is an outage like any other: read the gateway,
            # buffer and spool, and keep trying to connect the sink.
            log.warning("sink %s unavailable at start, retrying in the background: %s", self.sink.name, exc)
            self.admin.sink_error = str(exc)
            self._sink_starter = asyncio.create_task(self._start_sink_with_backoff(), name="sink-start")
        self.spool_damage.connect(self._put_events)
        self.publisher.start()
        self.state.start()
        admin = self.settings.admin
        token = secret(admin.token, admin.token_file)
        limits = AdminLimits(admin.header_timeout_s, admin.body_timeout_s, admin.max_connections,
                             read_only=admin.read_only)  # fmt: skip
        app = build_admin_app(self.admin, self.admin.render_metrics, token, limits)
        try:
            self._admin_runner, self.admin_port = await start_admin(app, admin.host, admin.port, limits)
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            why = "is in use by another process" if in_use else f"cannot be bound ({exc.strerror})"
            fix = "choose another admin.port (or --admin HOST:PORT)"
            raise BridgeError(f"admin.port: {admin.host}:{admin.port} {why}; {fix}") from None

    async def _start_sink_with_backoff(self) -> None:
        retry, failures = Backoff(SINK_START_RETRY, random.Random()), 0
        loop = asyncio.get_running_loop()
        since = summarized = loop.time()
        while True:
            failures += 1
            await asyncio.sleep(retry.delay_for(failures))
            try:
                await self.sink.start()
            except SinkError as exc:
                self.admin.sink_error = str(exc)
                if not exc.retryable:
                    log.error("sink %s refused for good, stopping: %s", self.sink.name, exc)
                    self.fatal_error = exc
                    self.stop()
                    return
                if loop.time() - summarized >= SINK_SUMMARY_INTERVAL_S:  # a summary, not a line per attempt
                    summarized = loop.time()
                    log.warning("sink %s still unavailable: %d attempts over %.0f s; last error: %s",
                                self.sink.name, failures + 1, summarized - since, exc)  # fmt: skip
                continue
            self.admin.sink_error = None
            log.info("sink %s connected after %d attempts", self.sink.name, failures + 1)
            return
    async def run(self) -> None:
        """Start, serve the gateway until ``stop()``, then drain."""
        try:
            await self.start()
        except BaseException:
            await self.shutdown()
            raise
        # Everything built so far lives as long as the process: keep it out of the collector's
        # full passes, which otherwise rescan it while the hot path allocates (~25% of its CPU).
        gc.freeze()
        # The hot path frees what it allocates by reference counting; what the collector sees
        # growing is the delivery buffer (thousands of records alive until acknowledged), which
        # CPython's default young-generation threshold (700) rescans and promotes hundreds of
        # times a second: ~8% of the CPU at 40k frames/s. Collect after 50,000 net allocations
        # instead; garbage cycles (rare here) still go within that bound.
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        gateway = asyncio.create_task(self.connection.run(), name="gateway")
        stopped = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({gateway, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            await self.shutdown(gateway)
            gc.set_threshold(*thresholds)
        if gateway in done:
            gateway.result()  # surface a crash of the session loop, after the drain
        if self.fatal_error is not None:
            raise self.fatal_error

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self, gateway: asyncio.Task[None] | None = None) -> None:
        """Stop reading the gateway, drain into the sink (what is left stays in the spool), close.

        Every step runs even when an earlier one failed: a crashed gateway loop must not
        keep critical records from reaching the spool.
        """
        await self.connection.stop()
        if gateway is not None and not gateway.done():
            try:
                await asyncio.wait_for(asyncio.shield(gateway), timeout=5)
            except TimeoutError:
                gateway.cancel()
            except Exception:  # reported by run() after the drain
                log.debug("gateway loop ended with an error during shutdown", exc_info=True)
        if self._sink_starter is not None:
            self._sink_starter.cancel()
        await self.state.stop()
        drained = await self.publisher.drain(self.settings.delivery.drain_timeout_s)
        if not drained:
            log.warning("drain deadline reached; undelivered critical events stay in the spool")
        for step in (self.sink.close, self.rest.close):
            try:
                await step()
            except Exception:
                log.exception("error while closing %s", getattr(step, "__qualname__", step))
        self.spool.close()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
