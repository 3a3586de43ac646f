"""Reconciliation racing live order updates: after each gap the bridge fetches orders over REST while
``sor`` keeps streaming; the REST snapshot must never be published after a newer live state, or a
consumer sees an order go back (Filled -> Submitted) on its key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.fault.harness import (
    EXECUTIONS,
    ORDERS,
    BridgeProcess,
    OrderFlow,
    TopicReader,
    bridge_config,
    wait_until_settled,
)
from tests.fault.record_check import compare_with_record
from tests.fixtures.brokers import ServerProcess
from tests.fixtures.sim import SimProcess

CONIDS = (265598, 8314)


def test_orders_reconciled_after_gaps_never_go_back_to_an_earlier_state(
    sim_process: SimProcess,
    own_kafka_broker: ServerProcess,
    bridge_process: Callable[..., BridgeProcess],
    topic_reader: Callable[[str], TopicReader],
    tmp_path: Path,
) -> None:
    bridge = bridge_process(bridge_config(sim_process, own_kafka_broker.address, tmp_path / "spool", CONIDS))
    bridge.start()
    reader = topic_reader(own_kafka_broker.address)
    with OrderFlow(sim_process, CONIDS, interval_s=0.03) as flow:
        for _ in range(8):
            time.sleep(1.0)
            sim_process.apply_fault("drop")  # a gap, then a reconciliation while orders are mid-lifecycle
        time.sleep(1.0)
    assert wait_until_settled(sim_process, flow.placed)

    def settled(r: TopicReader) -> bool:
        result = compare_with_record(
            sim_process.record(), r.records(ORDERS), r.records(EXECUTIONS), every_state=False
        )
        return not (result.orders_lost or result.final_states_lost or result.executions_lost)

    reader.wait_for(settled, timeout_s=60)
    result = compare_with_record(
        sim_process.record(), reader.records(ORDERS), reader.records(EXECUTIONS), every_state=False
    )
    print("\nreconcile race:", json.dumps({"orders_placed": len(flow.placed), **result.summary()}))
    assert result.orders_lost == [] and result.final_states_lost == [] and result.executions_lost == []
    assert result.orders_reordered == {}, (
        f"{len(result.orders_reordered)} orders went back to an earlier state, e.g. "
        f"{dict(list(result.orders_reordered.items())[:2])}"
    )
