"""Crash: the bridge is SIGKILLed while the broker is down, and started again on the same spool.

What the killed bridge had not delivered is read from a copy of its spool directory at the moment
of the kill: every one of those critical records must reach the consumers, with the same id, once
the broker is back. Across the crash nothing an order or a fill is made of may go missing: each
execution and each order's final state arrives (the restarted bridge reconciles over REST what
the gateway emitted while no bridge was running).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.delivery.spool import Spool
from tests.fault.harness import (
    EXECUTIONS,
    ORDERS,
    BridgeProcess,
    Consumed,
    OrderFlow,
    TopicReader,
    bridge_config,
    wait_until_settled,
)
from tests.fault.record_check import compare_with_record
from tests.fixtures.brokers import ServerProcess
from tests.fixtures.sim import SimProcess

CONIDS = (265598, 8314)


def unacknowledged(spool_dir: Path, scratch: Path) -> list[tuple[str, str, str]]:
    """(destination, key, id) of every record a killed bridge left unread in its spool, in spool order
    (read from a copy, so the bridge restarted on the original finds it as the kill left it)."""
    copy = scratch / "spool-at-kill"
    shutil.copytree(spool_dir, copy)
    spool = Spool(copy, max_bytes=1 << 40, segment_bytes=16 << 20)
    pending = []
    try:
        while spool.has_unread():
            records, _ = spool.read(1000)
            pending += [(r.destination, r.key.decode(), r.id) for r in records]
    finally:
        spool.close()
    return pending


def out_of_spool_order(pending: list[tuple[str, str, str]], consumed: list[Consumed]) -> list[str]:
    """Keys whose spooled records were first consumed in another order than the spool's."""
    first_seen: dict[tuple[str, str], int] = {}
    for n, record in enumerate(consumed):
        first_seen.setdefault((record.topic, record.id), n)
    by_key: dict[tuple[str, str], list[int]] = {}
    for destination, key, rid in pending:
        if (destination, rid) in first_seen:
            by_key.setdefault((destination, key), []).append(first_seen[(destination, rid)])
    return [f"{d} {k}" for (d, k), positions in by_key.items() if positions != sorted(positions)]


def crash_while_broker_down(
    sim: SimProcess,
    broker: ServerProcess,
    bridge: BridgeProcess,
    topic_reader: Callable[[str], TopicReader],
    scratch: Path,
    *,
    restart_before_broker_returns: bool,
) -> dict[str, Any]:
    bridge.start()
    reader = topic_reader(broker.address)
    with OrderFlow(sim, CONIDS, interval_s=0.2) as flow:
        time.sleep(2.0)
        broker.freeze()
        try:
            time.sleep(4.0)
            bridge.kill()
            pending = unacknowledged(Path(bridge.config["delivery"]["spool_dir"]), scratch)
            if restart_before_broker_returns:
                bridge.start()
                time.sleep(3.0)
        finally:
            broker.thaw()
        if not restart_before_broker_returns:
            bridge.start()
        time.sleep(3.0)
    placed = flow.placed
    assert wait_until_settled(sim, placed)
    pending_ids = {(destination, rid) for destination, _key, rid in pending}

    def consumed_ids(r: TopicReader) -> set[tuple[str, str]]:
        return {(c.topic, c.id) for c in r.records()}

    def everything_arrived(r: TopicReader) -> bool:
        result = compare_with_record(
            sim.record(), r.records(ORDERS), r.records(EXECUTIONS), every_state=False, order_ids=placed
        )
        lost = result.orders_lost or result.final_states_lost or result.executions_lost
        return not lost and pending_ids <= consumed_ids(r)

    reader.wait_for(everything_arrived, timeout_s=60)
    result = compare_with_record(
        sim.record(), reader.records(ORDERS), reader.records(EXECUTIONS), every_state=False, order_ids=placed
    )
    missing = sorted(pending_ids - consumed_ids(reader))
    figures = {
        "orders_placed": len(placed),
        "unacknowledged_in_spool_at_kill": len(pending_ids),
        "unacknowledged_never_delivered": len(missing),
        **result.summary(),
        "bridge_exit_codes": bridge.exit_codes,
    }
    print("\nbridge crash:", json.dumps(figures))
    assert bridge.running, f"the restarted bridge exited: {bridge.log()[-3000:]}"
    assert pending_ids, "the kill found nothing in the spool: the test did not exercise it"
    assert missing == [], f"{len(missing)} spooled critical records never delivered, e.g. {missing[:5]}"
    assert result.orders_lost == [] and result.final_states_lost == []
    assert result.executions_lost == [] and result.commissions_lost == []
    # Per key, what the spool held arrives in spool order. (Order states re-published by the
    # restarted bridge's reconciliation are checked by test_reconcile_order.py.)
    assert out_of_spool_order(pending, reader.records()) == []
    assert result.executions_reordered == []
    assert result.duplicates_with_other_content == [], "a duplicate must be the same event, same id"
    return figures


def _config(sim: SimProcess, broker: ServerProcess, tmp_path: Path) -> dict[str, Any]:
    # A small memory buffer, so critical records reach the spool within the outage.
    return bridge_config(sim, broker.address, tmp_path / "spool", CONIDS, delivery={"max_critical_events": 8})


@pytest.mark.parametrize("restart", ["after_the_broker_returns", "while_the_broker_is_down"])
def test_a_bridge_killed_during_a_broker_outage_delivers_its_spool_with_the_same_ids_after_restart(
    sim_process: SimProcess,
    own_kafka_broker: ServerProcess,
    bridge_process: Callable[..., BridgeProcess],
    topic_reader: Callable[[str], TopicReader],
    tmp_path: Path,
    restart: str,
) -> None:
    bridge = bridge_process(_config(sim_process, own_kafka_broker, tmp_path))
    crash_while_broker_down(
        sim_process,
        own_kafka_broker,
        bridge,
        topic_reader,
        tmp_path,
        restart_before_broker_returns=restart == "while_the_broker_is_down",
    )
