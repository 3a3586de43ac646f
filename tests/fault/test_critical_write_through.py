"""SIGKILL with critical records waiting: every one the bridge had read from the gateway arrives after
a restart.

The broker is frozen (SIGSTOP), so nothing is acknowledged while orders fill and PnL, account summary
and ledger frames arrive; the bridge holds them. The simulator then goes silent on those topics, so
what the bridge read is fixed; its own count of the events it normalized (``/metrics``) is what it
read. The bridge is SIGKILLed with the default ``max_critical_events`` (100,000: nothing had to spill
for lack of memory) and restarted with the broker back; the simulator stays silent on those topics,
so everything of theirs that reaches the consumer was read by the killed bridge.

Must arrive: each PnL record (its id carries the time it was read: one id per record), at least as
many account records as were read, every intermediate order state (REST reconciliation after the
restart only publishes an order's current state, so an intermediate state has no other way back) and
every execution.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.fault.harness import (
    EXECUTIONS,
    ORDERS,
    PNL,
    TOPICS,
    BridgeProcess,
    OrderFlow,
    TopicReader,
    bridge_config,
    wait_until_settled,
)
from tests.fault.record_check import Comparison, compare_with_record
from tests.fixtures.brokers import ServerProcess
from tests.fixtures.sim import SimProcess

CONIDS = (265598, 8314)
ACCOUNT = "ibkr.account.v1"
ACCOUNT_ID = "DU1234567"
PNL_TYPE = "com.ibkr.account.pnl.v1"
ACCOUNT_TYPES = ("com.ibkr.account.summary.v1", "com.ibkr.account.ledger.v1")
ORDER_TYPE = "com.ibkr.orders.order.v1"
SILENCED = ["spl", "ssd", "sld", "sor", "str"]  # every critical topic the simulator sends


def normalized_by_type(bridge: BridgeProcess) -> Counter[str]:
    """``ibkr_bridge_events_normalized_total`` per ``type`` label: what the bridge has read."""
    counts: Counter[str] = Counter()
    for line in bridge.metrics().splitlines():
        if line.startswith('ibkr_bridge_events_normalized_total{type="'):
            name = line.split('type="', 1)[1].split('"', 1)[0]
            counts[name] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def test_critical_records_read_before_a_sigkill_arrive_after_the_restart(
    sim_process_factory: Callable[..., SimProcess],
    own_kafka_broker: ServerProcess,
    bridge_process: Callable[..., BridgeProcess],
    tmp_path: Path,
) -> None:
    sim_process = sim_process_factory("--account-interval-s", "0.5")
    config = bridge_config(sim_process, own_kafka_broker.address, tmp_path / "spool", CONIDS)
    config["subscriptions"] |= {"account_summary": [ACCOUNT_ID], "account_ledger": [ACCOUNT_ID]}
    bridge = bridge_process(config)
    bridge.start()
    reader = TopicReader(own_kafka_broker.address, (*TOPICS, ACCOUNT))
    try:
        reader.start()
        assert reader.wait_for(lambda r: bool(r.records(PNL)) and bool(r.records(ACCOUNT)), 30)
        with own_kafka_broker.frozen():
            with OrderFlow(sim_process, CONIDS, interval_s=0.25) as flow:
                time.sleep(3.0)
            assert wait_until_settled(sim_process, flow.placed)
            time.sleep(1.5)  # more PnL ticks; the last order states reach the bridge
            sim_process.apply_fault("silence", topics=SILENCED)
            time.sleep(1.5)  # the bridge reads what was already sent
            read = normalized_by_type(bridge)
            bridge.kill()
        bridge.start()
        placed = flow.placed

        def compare(r: TopicReader) -> Comparison:
            return compare_with_record(sim_process.record(), r.records(ORDERS), r.records(EXECUTIONS),
                                       every_state=True, order_ids=placed)  # fmt: skip

        def pnl_ids(r: TopicReader) -> set[str]:
            return {c.id for c in r.records(PNL) if c.type == PNL_TYPE}

        def account_records(r: TopicReader) -> int:
            return sum(1 for c in r.records(ACCOUNT) if c.type in ACCOUNT_TYPES)

        def everything_arrived(r: TopicReader) -> bool:
            result = compare(r)
            orders_in = not (result.orders_lost or result.order_states_lost or result.executions_lost)
            return orders_in and len(pnl_ids(r)) >= read[PNL_TYPE] and account_records(r) >= sum(
                read[t] for t in ACCOUNT_TYPES
            )

        reader.wait_for(everything_arrived, timeout_s=60)
        result = compare(reader)
        figures = {
            "orders_placed": len(placed),
            "read_by_the_killed_bridge": {t: read[t] for t in (PNL_TYPE, *ACCOUNT_TYPES, ORDER_TYPE)},
            "pnl_arrived": len(pnl_ids(reader)),
            "account_records_arrived": account_records(reader),
            **result.summary(),
            "bridge_exit_codes": bridge.exit_codes,
        }
        print("\ncritical write-through:", json.dumps(figures))
    finally:
        reader.close()
    assert bridge.running, f"the restarted bridge exited: {bridge.log()[-3000:]}"
    assert placed and read[PNL_TYPE] and read[ORDER_TYPE], "nothing critical was read: the test did not run"
    assert len(pnl_ids(reader)) == read[PNL_TYPE], f"PnL records lost: {figures}"
    assert account_records(reader) >= sum(read[t] for t in ACCOUNT_TYPES), f"account records lost: {figures}"
    assert result.orders_lost == [] and result.order_states_lost == {}, f"order states lost: {figures}"
    assert result.executions_lost == [] and result.commissions_lost == [], f"executions lost: {figures}"
    assert result.duplicates_with_other_content == [], "a duplicate must be the same event, same id"
