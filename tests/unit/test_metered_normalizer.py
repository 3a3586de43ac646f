"""The metered normalizer counts every frame once: market data per batch, the rest per frame."""

from __future__ import annotations

import orjson

from bridge.metering import MeteredNormalizer
from bridge.metrics import BridgeMetrics

NOW_NS = 1_777_000_000_000_000_000


def sample(metrics: BridgeMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def smd(updated: int, **fields: object) -> bytes:
    return orjson.dumps({"topic": "smd+265598", "conid": 265598, "_updated": updated, **fields})


def test_quote_and_unchanged_market_data_frames_are_counted_at_the_next_flush() -> None:
    metrics = BridgeMetrics()
    normalizer = MeteredNormalizer(metrics)
    frames = [smd(1, **{"31": "1.5"}), smd(1, **{"31": "1.5"}), smd(2, **{"31": "1.6"})]
    for frame in frames:
        normalizer.normalize(frame, NOW_NS)
    assert sample(metrics, "ibkr_bridge_frames_received_total", topic="smd") == 0
    normalizer.flush_metrics()
    assert sample(metrics, "ibkr_bridge_frames_received_total", topic="smd") == 3
    assert sample(metrics, "ibkr_bridge_received_bytes_total", topic="smd") == sum(map(len, frames))
    assert sample(metrics, "ibkr_bridge_events_normalized_total", type="com.ibkr.marketdata.quote.v1") == 2
    assert sample(metrics, "ibkr_bridge_events_normalized_total", type="com.ibkr.gateway.control.v1") == 1
    normalizer.flush_metrics()  # nothing new: nothing added
    assert sample(metrics, "ibkr_bridge_frames_received_total", topic="smd") == 3


def test_other_frames_are_counted_as_they_are_normalized() -> None:
    metrics = BridgeMetrics()
    normalizer = MeteredNormalizer(metrics)
    normalizer.normalize(orjson.dumps({"topic": "system", "hb": 1}), NOW_NS)
    normalizer.normalize(b"{not json", NOW_NS)
    assert sample(metrics, "ibkr_bridge_frames_received_total", topic="system") == 1
    assert sample(metrics, "ibkr_bridge_events_normalized_total", type="com.ibkr.bridge.deadletter.v1") == 1
    assert sample(metrics, "ibkr_bridge_frames_received_total", topic="smd") == 0
