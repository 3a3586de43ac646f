"""The gateway session over real sockets against the simulator (REST + websocket, TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from bridge.backoff import Backoff
from bridge.events import Event, Execution, Lifecycle, LifecycleKind, Order, Quote
from bridge.gateway.connection import ConnectionSettings, GatewayConnection
from bridge.gateway.rest import GatewayRest, RestSettings
from bridge.ingest.session import GatewaySession
from bridge.ingest.session_types import SessionSettings
from bridge.ingest.subscriptions import Subscription
from bridge.sim.config import SimConfig
from bridge.sim.server import GatewaySimulator

CONIDS = (265598, 272093)
SUBSCRIPTIONS = (
    *(Subscription.market_data(c, ["31", "84", "86"]) for c in CONIDS),
    Subscription.orders(),
    Subscription.trades(),
)
FAST = SessionSettings(
    stale_after_s=2.0,
    reconnect_floor_s=0.1,
    reconnect_cap_s=1.0,
    healthy_reset_s=0.5,
    auth_poll_s=0.3,
    auth_timeout_s=3.0,
    tic_interval_s=1.0,
    tickle_interval_s=2.0,
    expected_cadence_s={"md": 3.0},
)


@dataclass
class Session:
    sim: GatewaySimulator
    conn: GatewayConnection
    received: list[tuple[int, Event]] = field(default_factory=list)

    def events(self, kind: type[Event]) -> list[Event]:
        return [e for _, e in self.received if isinstance(e, kind)]

    def lifecycle(self, *kinds: LifecycleKind) -> list[Lifecycle]:
        return [e for _, e in self.received if isinstance(e, Lifecycle) and e.kind in kinds]

    async def until(self, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _start(sim_config: SimConfig, settings: SessionSettings = FAST) -> AsyncIterator[Session]:
    async with GatewaySimulator(sim_config) as sim:
        gateway_session = GatewaySession(
            settings, SUBSCRIPTIONS, backoff=Backoff(settings.backoff_policy(), random.Random(5))
        )
        rest = GatewayRest(RestSettings(base_url=sim.base_url, insecure_tls=True, timeout_s=3.0))
        session: Session

        async def on_events(events: Sequence[Event], received_ns: int) -> None:
            session.received.extend((time.monotonic_ns(), e) for e in events)

        conn = GatewayConnection(
            gateway_session,
            rest,
            on_events,
            ConnectionSettings(
                ws_url=sim.ws_url,
                insecure_tls=True,
                auth_wait_s=3.0,
                auth_check_s=0.1,
                close_timeout_s=0.5,
                max_timer_sleep_s=0.2,
            ),
        )
        session = Session(sim, conn)
        task = asyncio.create_task(conn.run())
        try:
            await session.until(lambda: conn.ready and len(session.events(Quote)) >= len(CONIDS))
            yield session
        finally:
            await conn.stop()
            await asyncio.wait_for(task, 10)
            await rest.close()


@pytest.fixture
async def gateway() -> AsyncIterator[Session]:
    async with _start(
        SimConfig(
            port=0,
            heartbeat_s=0.5,
            md_interval_s=0.2,
            order_step_s=0.01,
            order_confirmation=False,
            str_history_days=1,
        )
    ) as session:
        yield session


def _quote_after(session: Session, t_ns: int) -> bool:
    return any(isinstance(e, Quote) and at > t_ns for at, e in session.received)


def _gaps_pair_up(session: Session) -> None:
    starts = session.lifecycle(LifecycleKind.GAP_START)
    ends = session.lifecycle(LifecycleKind.GAP_END)
    assert [e.gap_id for e in starts] == [e.gap_id for e in ends]
    assert all(s.gap_started_ms == e.gap_started_ms for s, e in zip(starts, ends, strict=True))


async def test_every_drop_is_followed_by_resubscription_and_data(gateway: Session) -> None:
    drops = 5
    for _ in range(drops):
        dropped_ns = time.monotonic_ns()
        await gateway.sim.apply_fault("drop")
        await gateway.until(
            lambda t=dropped_ns: _quote_after(gateway, t) and gateway.conn.ready,
            timeout_s=30,  # a wait, not a speed assertion: the backoff bound is unit-tested
        )
        await asyncio.sleep(0.5)
    assert gateway.sim.stats()["connections_total"] == drops + 1
    assert len(gateway.lifecycle(LifecycleKind.RESUBSCRIBED)) == drops + 1
    _gaps_pair_up(gateway)
    assert len(gateway.lifecycle(LifecycleKind.GAP_START)) == drops
    assert gateway.sim.stats()["connections_open"] == 1


async def test_orders_filled_while_the_socket_is_down_appear_once_marked_reconciled(gateway: Session) -> None:
    await gateway.sim.apply_fault("refuse_upgrade", status=503, count=3)
    await gateway.sim.apply_fault("drop")
    await gateway.until(lambda: not gateway.conn.ready)
    status, placed = gateway.sim.gateway.orders.place(
        gateway.sim.config.account,
        {"orders": [{"conid": 265598, "orderType": "MKT", "side": "BUY", "quantity": 3}]},
    )
    assert status == 200
    order_id = int(placed[0]["order_id"])
    await gateway.until(lambda: gateway.sim.record.orders[order_id]["status"] == "Filled")
    await gateway.until(
        lambda: (
            bool(gateway.lifecycle(LifecycleKind.RECONCILED))
            and gateway.conn.ready
            and len(gateway.lifecycle(LifecycleKind.RECONCILED)) >= 2
        )
    )
    await asyncio.sleep(0.5)
    orders = [e for e in gateway.events(Order) if isinstance(e, Order) and e.order_id == order_id]
    assert orders and all(o.reconciled for o in orders)
    assert orders[-1].status == "Filled"
    fills = [e for e in gateway.events(Execution) if isinstance(e, Execution) and e.order_id == order_id]
    expected = {x["execution_id"] for x in gateway.sim.record.executions if x.get("order_id") == order_id}
    assert expected and {f.execution_id for f in fills} == expected
    assert all(f.reconciled for f in fills)
    ids = Counter((f.execution_id, f.commission is None) for f in fills)  # the commission copy updates
    assert max(ids.values()) == 1
    _gaps_pair_up(gateway)


async def test_a_stalled_socket_is_replaced_and_the_gap_is_reported(gateway: Session) -> None:
    stalled_ns = time.monotonic_ns()
    await gateway.sim.apply_fault("stall", duration_s=3.0)
    await gateway.until(lambda: _quote_after(gateway, stalled_ns + 3_000_000_000) and gateway.conn.ready)
    (gap,) = gateway.lifecycle(LifecycleKind.GAP_START)
    assert gap.reason and gap.reason.startswith("stale")
    _gaps_pair_up(gateway)


@pytest.mark.parametrize("fault", ["competing", "auth_loss"])
async def test_auth_loss_and_competing_sessions_recover_without_a_restart(
    gateway: Session, fault: str
) -> None:
    lost_ns = time.monotonic_ns()
    await gateway.sim.apply_fault(fault, duration_s=1.0)
    await gateway.until(lambda: not gateway.conn.ready)
    await gateway.until(lambda: _quote_after(gateway, lost_ns + 1_000_000_000) and gateway.conn.ready)
    kinds = [e.kind for e in gateway.lifecycle(*LifecycleKind)]
    assert LifecycleKind.UNAUTHENTICATED in kinds
    if fault == "competing":
        assert LifecycleKind.COMPETING in kinds
    _gaps_pair_up(gateway)
    assert len(gateway.lifecycle(LifecycleKind.GAP_END)) == 1


async def test_refused_upgrades_are_retried_with_backoff_until_one_succeeds(gateway: Session) -> None:
    await gateway.sim.apply_fault("refuse_upgrade", status=401, count=3)
    dropped_ns = time.monotonic_ns()
    await gateway.sim.apply_fault("drop")
    await gateway.until(lambda: _quote_after(gateway, dropped_ns) and gateway.conn.ready)
    failed = [e for e in gateway.lifecycle(LifecycleKind.DISCONNECTED) if e.detail.get("attempt_failed")]
    assert len(failed) == 3
    assert gateway.sim.stats()["refused_upgrades"] == 3
    _gaps_pair_up(gateway)


async def test_no_conid_goes_silent_longer_than_the_smd_refresh_when_the_server_expires_streams() -> None:
    settings = replace(FAST, smd_refresh_s=1.0, expected_cadence_s={})
    config = SimConfig(port=0, heartbeat_s=0.5, md_interval_s=0.1, smd_expiry_s=2.0)
    async with _start(config, settings) as session:
        started_ns = time.monotonic_ns()
        await asyncio.sleep(6.0)
        for conid in CONIDS:
            times = [at for at, e in session.received if isinstance(e, Quote) and e.conid == conid]
            times = [t for t in times if t >= started_ns]
            gaps_s = [
                (b - a) / 1e9
                for a, b in zip([started_ns, *times], [*times, time.monotonic_ns()], strict=True)
            ]
            assert max(gaps_s) < settings.smd_refresh_s + 0.6, (conid, max(gaps_s))
        assert not session.lifecycle(LifecycleKind.GAP_START)
