"""bridge.metrics: names, units, labels, and that every method moves its metric."""

from __future__ import annotations

import inspect

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.delivery.observer import DeliveryObserver
from bridge.events import EventClass
from bridge.metrics import CONTENT_TYPE_LATEST, BridgeMetrics, DeliveryMetrics

# Issue 6's list, one exported sample name each (histograms by their _count).
REQUIRED_NAMES = {
    "ibkr_bridge_gateway_authenticated",
    "ibkr_bridge_gateway_competing",
    "ibkr_bridge_gateway_connected",
    "ibkr_bridge_session_epoch",
    "ibkr_bridge_gateway_connects_total",
    "ibkr_bridge_gateway_disconnects_total",
    "ibkr_bridge_frames_received_total",
    "ibkr_bridge_received_bytes_total",
    "ibkr_bridge_last_frame_timestamp_seconds",
    "ibkr_bridge_heartbeat_age_seconds",
    "ibkr_bridge_subscriptions",
    "ibkr_bridge_resubscribes_total",
    "ibkr_bridge_stale_subscriptions",
    "ibkr_bridge_events_normalized_total",
    "ibkr_bridge_normalize_errors_total",
    "ibkr_bridge_gaps_total",
    "ibkr_bridge_reconciled_events_total",
    "ibkr_bridge_events_published_total",
    "ibkr_bridge_publish_errors_total",
    "ibkr_bridge_publish_duration_seconds_count",
    "ibkr_bridge_event_lag_seconds_count",
    "ibkr_bridge_buffer_events",
    "ibkr_bridge_buffer_capacity_events",
    "ibkr_bridge_conflated_events_total",
    "ibkr_bridge_dropped_events_total",
    "ibkr_bridge_spool_bytes",
    "ibkr_bridge_spool_segments",
    "ibkr_bridge_dead_letter_events_total",
    "ibkr_bridge_backpressure_wait_seconds_total",
    "ibkr_bridge_build_info",
    "process_resident_memory_bytes",
    "python_gc_collections_total",
}


def value(metrics: BridgeMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"{name}{labels} is not exported"
    return found


@pytest.fixture
def metrics() -> BridgeMetrics:
    return BridgeMetrics(version="1.2.3", commit="abc1234")


def test_exports_every_metric_the_issue_lists(metrics: BridgeMetrics) -> None:
    missing = REQUIRED_NAMES - metrics.exported_names()
    assert not missing


def test_bridge_metrics_are_prefixed_and_counters_end_in_total(metrics: BridgeMetrics) -> None:
    families = [f for f in metrics.registry.collect() if not f.name.startswith(("process_", "python_"))]
    assert families
    for family in families:
        assert family.name.startswith("ibkr_bridge_"), family.name
        if family.type == "counter":
            assert f"{family.name}_total" in metrics.exported_names()


def test_no_metric_has_a_per_instrument_label(metrics: BridgeMetrics) -> None:
    forbidden = {"conid", "symbol", "order_id", "account", "key"}
    for family in metrics.registry.collect():
        for sample in family.samples:
            assert not forbidden & set(sample.labels), sample


def test_frames_received_counts_frames_bytes_and_time_under_the_topic_family(
    metrics: BridgeMetrics,
) -> None:
    metrics.frames_received("smd+265598", 3, 900, at_s=1_700_000_000.5)
    metrics.frames_received("smd+8314", 2, 100, at_s=1_700_000_001.0)

    assert value(metrics, "ibkr_bridge_frames_received_total", topic="smd") == 5
    assert value(metrics, "ibkr_bridge_received_bytes_total", topic="smd") == 1000
    assert value(metrics, "ibkr_bridge_last_frame_timestamp_seconds", topic="smd") == 1_700_000_001.0
    per_conid = {"topic": "smd+8314"}
    assert metrics.registry.get_sample_value("ibkr_bridge_frames_received_total", per_conid) is None


def test_events_normalized_and_normalize_errors_count_by_type_and_topic(metrics: BridgeMetrics) -> None:
    metrics.events_normalized("com.ibkr.marketdata.quote.v1", 7)
    metrics.events_normalized("com.ibkr.marketdata.quote.v1", 1)
    metrics.normalize_failed("sor", 2)

    assert value(metrics, "ibkr_bridge_events_normalized_total", type="com.ibkr.marketdata.quote.v1") == 8
    assert value(metrics, "ibkr_bridge_normalize_errors_total", topic="sor") == 2


def test_session_methods_set_gauges_and_count_connects_by_reason(metrics: BridgeMetrics) -> None:
    metrics.set_authenticated(True)
    metrics.set_competing(True)
    metrics.set_session_epoch(4)
    metrics.connected("startup")
    metrics.disconnected("heartbeat_timeout")
    metrics.connected("reconnect")
    metrics.set_heartbeat_age(12.5)

    assert value(metrics, "ibkr_bridge_gateway_authenticated") == 1
    assert value(metrics, "ibkr_bridge_gateway_competing") == 1
    assert value(metrics, "ibkr_bridge_session_epoch") == 4
    assert value(metrics, "ibkr_bridge_gateway_connected") == 1
    assert value(metrics, "ibkr_bridge_gateway_connects_total", reason="reconnect") == 1
    assert value(metrics, "ibkr_bridge_gateway_disconnects_total", reason="heartbeat_timeout") == 1
    assert value(metrics, "ibkr_bridge_heartbeat_age_seconds") == 12.5
    metrics.disconnected("closed")
    assert value(metrics, "ibkr_bridge_gateway_connected") == 0


def test_subscription_gap_and_reconcile_methods_move_their_metrics(metrics: BridgeMetrics) -> None:
    metrics.set_subscriptions("smd+1", "active", 3)
    metrics.set_stale_subscriptions("smd", 1)
    metrics.resubscribed("reconnect", 3)
    metrics.gap_opened("disconnect")
    assert value(metrics, "ibkr_bridge_gap_open") == 1
    metrics.gap_closed()
    metrics.events_reconciled("orders", 5)

    assert value(metrics, "ibkr_bridge_subscriptions", topic="smd", state="active") == 3
    assert value(metrics, "ibkr_bridge_stale_subscriptions", topic="smd") == 1
    assert value(metrics, "ibkr_bridge_resubscribes_total", reason="reconnect") == 3
    assert value(metrics, "ibkr_bridge_gaps_total", reason="disconnect") == 1
    assert value(metrics, "ibkr_bridge_gap_open") == 0
    assert value(metrics, "ibkr_bridge_reconciled_events_total", family="orders") == 5


def test_publish_outcomes_feed_the_error_ratio_and_sink_state(metrics: BridgeMetrics) -> None:
    metrics.events_published("kafka", "ibkr.orders.v1", 10)
    metrics.publish_succeeded("kafka", 0.004)
    metrics.publish_failed("kafka", "unavailable")

    orders = {"sink": "kafka", "destination": "ibkr.orders.v1"}
    assert value(metrics, "ibkr_bridge_events_published_total", **orders) == 10
    assert value(metrics, "ibkr_bridge_publish_errors_total", sink="kafka", error="unavailable") == 1
    assert value(metrics, "ibkr_bridge_publish_errors_total", sink="kafka", error="rejected") == 0
    assert value(metrics, "ibkr_bridge_publish_duration_seconds_count", sink="kafka") == 1
    assert value(metrics, "ibkr_bridge_publish_duration_seconds_bucket", sink="kafka", le="0.005") == 1
    assert value(metrics, "ibkr_bridge_sink_up", sink="kafka") == 0
    metrics.publish_succeeded("kafka", 0.002)
    assert value(metrics, "ibkr_bridge_sink_up", sink="kafka") == 1


def test_event_lags_land_in_the_histogram_of_their_class(metrics: BridgeMetrics) -> None:
    metrics.observe_event_lags("market_data", [0.02, 0.3, 45.0])

    md = {"class": "market_data"}
    assert value(metrics, "ibkr_bridge_event_lag_seconds_count", **md) == 3
    assert value(metrics, "ibkr_bridge_event_lag_seconds_bucket", le="0.5", **md) == 2
    assert value(metrics, "ibkr_bridge_event_lag_seconds_sum", **md) == pytest.approx(45.32)


def test_buffer_spool_and_loss_methods_move_their_metrics(metrics: BridgeMetrics) -> None:
    metrics.set_buffer_events("critical", 800)
    metrics.set_buffer_capacity("critical", 1000)
    metrics.events_conflated(4)
    metrics.events_spooled(6)
    metrics.events_replayed(5)
    metrics.events_dropped("market_data", 2)
    metrics.set_backpressure("critical", True)
    metrics.backpressure_waited("critical", 0.25)
    metrics.set_spool(4096, 2, capacity_bytes=1 << 20)
    metrics.dead_lettered("frame")

    assert value(metrics, "ibkr_bridge_buffer_events", **{"class": "critical"}) == 800
    assert value(metrics, "ibkr_bridge_buffer_capacity_events", **{"class": "critical"}) == 1000
    assert value(metrics, "ibkr_bridge_conflated_events_total") == 4
    assert value(metrics, "ibkr_bridge_spooled_events_total") == 6
    assert value(metrics, "ibkr_bridge_replayed_events_total") == 5
    assert value(metrics, "ibkr_bridge_dropped_events_total", **{"class": "market_data"}) == 2
    assert value(metrics, "ibkr_bridge_backpressure_active", **{"class": "critical"}) == 1
    assert value(metrics, "ibkr_bridge_backpressure_wait_seconds_total", **{"class": "critical"}) == 0.25
    assert value(metrics, "ibkr_bridge_spool_bytes") == 4096
    assert value(metrics, "ibkr_bridge_spool_segments") == 2
    assert value(metrics, "ibkr_bridge_spool_capacity_bytes") == 1 << 20
    assert value(metrics, "ibkr_bridge_dead_letter_events_total", source="frame") == 1


def test_alerting_counters_exist_at_zero_before_their_first_event(metrics: BridgeMetrics) -> None:
    assert value(metrics, "ibkr_bridge_dropped_events_total", **{"class": "critical"}) == 0
    assert value(metrics, "ibkr_bridge_dead_letter_events_total", source="record") == 0
    assert value(metrics, "ibkr_bridge_gateway_connects_total", reason="reconnect") == 0


def test_build_info_carries_version_and_commit(metrics: BridgeMetrics) -> None:
    samples = [s for f in metrics.registry.collect() if f.name == "ibkr_bridge_build_info" for s in f.samples]
    assert len(samples) == 1
    assert samples[0].value == 1
    assert samples[0].labels["version"] == "1.2.3"
    assert samples[0].labels["commit"] == "abc1234"


def test_fresh_instances_do_not_share_values() -> None:
    first, second = BridgeMetrics(), BridgeMetrics()
    first.events_conflated(3)
    assert value(second, "ibkr_bridge_conflated_events_total") == 0


def test_render_is_parseable_text_exposition_with_the_values_set(metrics: BridgeMetrics) -> None:
    metrics.frames_received("sor", 1, 42, at_s=5.0)
    text = metrics.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    assert CONTENT_TYPE_LATEST.startswith("text/plain")
    assert "process_resident_memory_bytes" in families
    received = families["ibkr_bridge_received_bytes"]
    assert [(s.labels, s.value) for s in received.samples] == [({"topic": "sor"}, 42.0)]
    assert "_created" not in text


def test_delivery_metrics_implements_every_method_of_the_delivery_observer() -> None:
    methods = {name: fn for name, fn in vars(DeliveryObserver).items() if not name.startswith("_")}
    wanted = {name: inspect.signature(fn) for name, fn in methods.items() if inspect.isfunction(fn)}
    assert len(wanted) >= 10
    for name, signature in wanted.items():
        method = getattr(DeliveryMetrics, name, None)
        assert method is not None, name
        assert list(inspect.signature(method).parameters) == list(signature.parameters), name


def test_delivery_observer_reports_under_its_sink(metrics: BridgeMetrics) -> None:
    observer = metrics.delivery_observer("redis")
    observer.published("ibkr.orders.v1", 4)
    observer.publish_duration(0.01, 4)
    observer.publish_failed("SinkUnavailable", True)
    observer.publish_failed("SinkRejected", False)
    observer.dead_lettered("ibkr.orders.v1", 1)
    observer.dropped(EventClass.MARKET_DATA, 2)
    observer.conflated(EventClass.MARKET_DATA, 3)
    observer.buffer_depth(EventClass.CRITICAL, 12)
    observer.spool_usage(2048, 1)
    observer.spooled(7)
    observer.replayed(7)
    observer.backpressure(True)

    redis_orders = {"sink": "redis", "destination": "ibkr.orders.v1"}
    assert value(metrics, "ibkr_bridge_events_published_total", **redis_orders) == 4
    assert value(metrics, "ibkr_bridge_publish_duration_seconds_count", sink="redis") == 1
    assert value(metrics, "ibkr_bridge_publish_errors_total", sink="redis", error="unavailable") == 1
    assert value(metrics, "ibkr_bridge_publish_errors_total", sink="redis", error="rejected") == 1
    assert value(metrics, "ibkr_bridge_dead_letter_events_total", source="record") == 1
    assert value(metrics, "ibkr_bridge_dropped_events_total", **{"class": "market_data"}) == 2
    assert value(metrics, "ibkr_bridge_conflated_events_total") == 3
    assert value(metrics, "ibkr_bridge_buffer_events", **{"class": "critical"}) == 12
    assert value(metrics, "ibkr_bridge_spool_bytes") == 2048
    assert value(metrics, "ibkr_bridge_spooled_events_total") == 7
    assert value(metrics, "ibkr_bridge_replayed_events_total") == 7
    assert value(metrics, "ibkr_bridge_backpressure_active", **{"class": "critical"}) == 1
    assert value(metrics, "ibkr_bridge_sink_up", sink="redis") == 0
