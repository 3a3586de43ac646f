"""Broker outage: the Kafka-protocol broker stops while orders fill and quotes stream, then comes back.

The broker keeps its data in memory only, so it is frozen (SIGSTOP, then SIGCONT) or cut off
behind a TCP proxy rather than restarted. Checked against the simulator's record: every order
state and every execution arrives, in order per key; market data is conflated while the broker
is away and current once it is back; the bridge's memory stays bounded.

The 20 s outage is ``slow``: ``.venv/bin/python -m pytest tests/fault/test_broker_outage.py -m slow -q -s``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fault.harness import (
    EXECUTIONS,
    MARKET_DATA,
    ORDERS,
    BridgeProcess,
    OrderFlow,
    TopicReader,
    bridge_config,
    read_status_kb,
    wait_until_settled,
)
from tests.fault.record_check import (
    compare_with_record,
    count_ids,
    latest_quote_ms,
    per_key_times_never_go_back,
)
from tests.fixtures.brokers import ProxiedBroker
from tests.fixtures.sim import SimProcess

CONIDS = (265598, 8314, 272093, 76792991, 4815747, 107113386)
QUOTE_RATE = "3000"  # smd frames/s from the simulator, shared by the conids
MAX_MARKET_DATA_EVENTS = 500
# The bridge's own growth allowed while the broker is away: buffers are bounded by count, so a
# leak (an unbounded queue of 3000 quotes/s) shows as tens of MiB within seconds.
RSS_GROWTH_LIMIT_KB = 96 * 1024
RESULTS = Path(__file__).resolve().parents[2] / "bench-results"


def _expected_ids_arrived(sim: SimProcess, placed: list[int]) -> Callable[[TopicReader], bool]:
    def check(reader: TopicReader) -> bool:
        record = sim.record()
        result = compare_with_record(
            record, reader.records(ORDERS), reader.records(EXECUTIONS), every_state=True, order_ids=placed
        )
        return not (
            result.orders_lost
            or result.order_states_lost
            or result.executions_lost
            or result.commissions_lost
            or result.final_states_lost
        )

    return check


def run_outage(
    outage_s: float,
    sim: SimProcess,
    bootstrap: str,
    stop_broker: Callable[[], None],
    start_broker: Callable[[], None],
    bridge: BridgeProcess,
    topic_reader: Callable[[str], TopicReader],
) -> dict[str, Any]:
    bridge.start()
    reader = topic_reader(bootstrap)
    assert reader.wait_for(
        lambda r: set(latest_quote_ms(r.records(MARKET_DATA))) >= {str(c) for c in CONIDS}, 30
    ), "quotes for every conid before the outage"
    with OrderFlow(sim, CONIDS[:2], interval_s=0.2) as flow:
        time.sleep(2.0)
        baseline_kb = bridge.rss_kb()
        stop_broker()
        try:
            time.sleep(outage_s)
            during_kb = bridge.rss_kb()
        finally:
            start_broker()
        back_ms = int(time.time() * 1000)
        time.sleep(2.0)
    assert bridge.running, bridge.log()[-3000:]
    placed = flow.placed
    assert len(placed) >= outage_s * 3, f"only {len(placed)} orders placed: {flow.failures[:3]}"
    assert wait_until_settled(sim, placed)

    reader.wait_for(_expected_ids_arrived(sim, placed), timeout_s=60)
    reader.wait_for(lambda r: min(latest_quote_ms(r.records(MARKET_DATA)).values()) > back_ms, timeout_s=30)
    record = sim.record()
    result = compare_with_record(
        record, reader.records(ORDERS), reader.records(EXECUTIONS), every_state=True, order_ids=placed
    )
    quotes = reader.records(MARKET_DATA)
    conflated = bridge.metric("ibkr_bridge_conflated_events_total")
    figures = {
        "outage_s": outage_s,
        "orders_placed": len(placed),
        **result.summary(),
        "quotes_consumed": len(quotes),
        "quote_redeliveries": sum(n - 1 for n in count_ids(quotes).values()),
        "quotes_sent_by_simulator": sim.stats()["frames"].get("smd", 0),
        "quotes_conflated": conflated,
        "rss_before_kb": baseline_kb,
        "rss_end_of_outage_kb": during_kb,
        "peak_rss_kb": max(bridge.peak_rss_kb, read_hwm(bridge)),
    }
    print("\nbroker outage:", json.dumps(figures))

    assert result.orders_lost == [] and result.final_states_lost == []
    assert result.order_states_lost == {}, "order states the simulator emitted but nobody consumed"
    assert result.orders_reordered == {}
    assert result.executions_lost == [] and result.commissions_lost == []
    assert result.executions_reordered == []
    assert result.duplicates_with_other_content == [], "a duplicate must be the same event, same id"
    assert per_key_times_never_go_back(quotes) == {}, "a stale quote was published after a fresh one"
    latest = latest_quote_ms(quotes)
    assert all(latest[str(c)] > back_ms for c in CONIDS), "market data is current after the outage"
    assert conflated > 0, "3000 quotes/s against a stopped broker must have been conflated"
    assert figures["peak_rss_kb"] - baseline_kb < RSS_GROWTH_LIMIT_KB, figures
    return figures


def read_hwm(bridge: BridgeProcess) -> int:
    return read_status_kb(bridge.pid, "VmHWM") if bridge.running else 0


def _save(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


@pytest.fixture
def quote_heavy_sim(sim_process_factory: Callable[..., SimProcess]) -> SimProcess:
    return sim_process_factory("--rate", QUOTE_RATE, "--conids", ",".join(map(str, CONIDS)))


def _config(sim: SimProcess, bootstrap: str, tmp_path: Path) -> dict[str, Any]:
    return bridge_config(
        sim,
        bootstrap,
        tmp_path / "spool",
        CONIDS,
        delivery={"max_market_data_events": MAX_MARKET_DATA_EVENTS},
    )


def test_a_frozen_broker_loses_no_order_or_fill_and_market_data_comes_back_current(
    quote_heavy_sim: SimProcess,
    own_kafka_broker: Any,
    bridge_process: Callable[..., BridgeProcess],
    topic_reader: Callable[[str], TopicReader],
    tmp_path: Path,
) -> None:
    bridge = bridge_process(_config(quote_heavy_sim, own_kafka_broker.address, tmp_path))
    run_outage(
        5.0,
        quote_heavy_sim,
        own_kafka_broker.address,
        own_kafka_broker.freeze,
        own_kafka_broker.thaw,
        bridge,
        topic_reader,
    )


def test_a_broker_cut_off_the_network_loses_no_order_or_fill(
    quote_heavy_sim: SimProcess,
    proxied_kafka_broker: ProxiedBroker,
    bridge_process: Callable[..., BridgeProcess],
    topic_reader: Callable[[str], TopicReader],
    tmp_path: Path,
) -> None:
    proxy = proxied_kafka_broker.proxy
    bridge = bridge_process(_config(quote_heavy_sim, proxied_kafka_broker.bootstrap, tmp_path))
    run_outage(
        5.0, quote_heavy_sim, proxied_kafka_broker.bootstrap, proxy.cut, proxy.restore, bridge, topic_reader
    )


@pytest.mark.slow
def test_a_broker_stopped_for_twenty_seconds_loses_no_order_or_fill_and_memory_stays_bounded(
    quote_heavy_sim: SimProcess,
    own_kafka_broker: Any,
    bridge_process: Callable[..., BridgeProcess],
    topic_reader: Callable[[str], TopicReader],
    tmp_path: Path,
) -> None:
    bridge = bridge_process(_config(quote_heavy_sim, own_kafka_broker.address, tmp_path))
    figures = run_outage(
        20.0,
        quote_heavy_sim,
        own_kafka_broker.address,
        own_kafka_broker.freeze,
        own_kafka_broker.thaw,
        bridge,
        topic_reader,
    )
    _save("broker-outage", figures)
