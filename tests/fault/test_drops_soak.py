"""Drops soak: the gateway closes the bridge's socket every 2 s for 30 s (simulator ``drop`` fault).

What a consumer of the bridge's topics can check, and what is checked here from the records it
reads (lifecycle events on ``ibkr.bridge.v1``, quotes on ``ibkr.marketdata.v1``):

- each drop is followed by a resubscription and by fresh quotes for every conid within the
  reconnect backoff cap + 1 s;
- at most one connection attempt per backoff interval (one new gateway connection per drop, none
  sooner than the backoff floor after the disconnect);
- every drop opens a gap and every gap is closed, in pairs.

``slow`` (about 45 s): ``.venv/bin/python -m pytest tests/fault/test_drops_soak.py -m slow -q -s``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fault.harness import (
    MARKET_DATA,
    BridgeProcess,
    Consumed,
    TopicReader,
    bridge_config,
)
from tests.fault.record_check import latest_quote_ms
from tests.fixtures.brokers import ServerProcess
from tests.fixtures.sim import SimProcess

CONIDS = (265598, 8314)
FLOOR_S = 0.2
CAP_S = 0.8
DROP_EVERY_S = 2.0
SOAK_S = 30.0


def _first_after(records: list[Consumed], after_ms: int, field: str) -> int | None:
    times = [
        r.data[field] for r in records if isinstance(r.data.get(field), int) and r.data[field] > after_ms
    ]
    return min(times, default=None)


@pytest.mark.slow
def test_drops_every_two_seconds_are_each_followed_by_resubscription_and_data_within_the_backoff(
    sim_process: SimProcess,
    own_kafka_broker: ServerProcess,
    bridge_process: Callable[..., BridgeProcess],
    topic_reader: Callable[[str], TopicReader],
    tmp_path: Path,
) -> None:
    config = bridge_config(
        sim_process,
        own_kafka_broker.address,
        tmp_path / "spool",
        CONIDS,
        session={
            "reconnect_floor_s": FLOOR_S,
            "reconnect_cap_s": CAP_S,
            "healthy_reset_s": 30,
            "stale_after_s": 5,
        },
    )
    bridge = bridge_process(config)
    bridge.start()
    reader = topic_reader(own_kafka_broker.address)
    assert reader.wait_for(lambda r: len(latest_quote_ms(r.records(MARKET_DATA))) == len(CONIDS), 30)
    connections_before = sim_process.stats()["connections_total"]

    drops: list[tuple[int, list[int]]] = []  # (wall clock ms, sockets closed)
    started = time.monotonic()
    while time.monotonic() - started < SOAK_S:
        at_ms = int(time.time() * 1000)
        drops.append((at_ms, sim_process.apply_fault("drop")["result"]["closed"]))
        time.sleep(max(0.0, started + len(drops) * DROP_EVERY_S - time.monotonic()))
    last_drop_ms = drops[-1][0]
    reader.wait_for(
        lambda r: (
            _first_after(r.records(MARKET_DATA), last_drop_ms, "updated_ms") is not None
            and any(e.data["at_ms"] > last_drop_ms for e in r.lifecycle("gap_end"))
        ),
        15,
    )
    time.sleep(1.0)
    stats = sim_process.stats()
    assert bridge.running, bridge.log()[-3000:]

    bound_ms = int((CAP_S + 1.0) * 1000)
    lifecycle = reader.lifecycle()
    resubscribed = [e for e in lifecycle if e.data["kind"] == "resubscribed"]
    quotes = reader.records(MARKET_DATA)
    late: list[str] = []
    recoveries_ms: list[int] = []
    for at_ms, _closed in drops:
        resub = _first_after(resubscribed, at_ms, "at_ms")
        if resub is None or resub - at_ms > bound_ms:
            late.append(f"drop at {at_ms}: resubscribed {None if resub is None else resub - at_ms} ms later")
            continue
        for conid in CONIDS:
            fresh = _first_after([q for q in quotes if q.key == str(conid)], at_ms, "updated_ms")
            if fresh is None or fresh - at_ms > bound_ms:
                late.append(
                    f"drop at {at_ms}: conid {conid} data {None if fresh is None else fresh - at_ms} ms later"
                )
            else:
                recoveries_ms.append(fresh - at_ms)

    connects = [e for e in lifecycle if e.data["kind"] == "connected"]
    disconnects = [e for e in lifecycle if e.data["kind"] == "disconnected"]
    failed_attempts = [e for e in disconnects if e.data.get("detail", {}).get("attempt_failed")]
    attempts = sorted([e.data["at_ms"] for e in connects] + [e.data["at_ms"] for e in failed_attempts])
    losses = sorted(
        e.data["at_ms"] for e in disconnects if not e.data.get("detail", {}).get("attempt_failed")
    )
    too_soon = [
        (lost, nxt)
        for lost in losses
        for nxt in [min((a for a in attempts if a > lost), default=None)]
        if nxt is not None and nxt - lost < FLOOR_S * 1000
    ]
    starts = reader.lifecycle("gap_start")
    ends = reader.lifecycle("gap_end")
    new_connections = stats["connections_total"] - connections_before

    figures = {
        "drops": len(drops),
        "drops_that_closed_a_socket": sum(1 for _, closed in drops if closed),
        "new_gateway_connections": new_connections,
        "connect_attempts_seen": len([a for a in attempts if a > drops[0][0]]),
        "gaps_opened": len(starts),
        "gaps_closed": len(ends),
        "recovery_ms_max": max(recoveries_ms, default=None),
        "recovery_ms_mean": round(sum(recoveries_ms) / len(recoveries_ms)) if recoveries_ms else None,
    }
    print("\ndrops soak:", json.dumps(figures))

    assert all(closed for _, closed in drops), "a drop found no open socket: the bridge was still away"
    assert late == [], late
    assert new_connections == len(drops), "one connection attempt per drop, no more"
    assert too_soon == [], "reconnected sooner than the backoff floor"
    assert [e.data["gap_id"] for e in starts] == [e.data["gap_id"] for e in ends], (
        "gaps open and close in pairs"
    )
    assert len(starts) == len(drops) and all(e.data["gap_id"] for e in starts)
    assert all(
        s.data["gap_started_ms"] == e.data["gap_started_ms"] <= e.data["at_ms"]
        for s, e in zip(starts, ends, strict=True)
    )
