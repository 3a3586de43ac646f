"""Gateway-global state of the simulator: sessions, authentication, the open sockets, shared timers
(heartbeat on a wall-clock phase, market data ticks, account topics) and the fault switches.

Timers fan each frame out to every socket in one loop turn; the frame is encoded once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bridge.sim import frames
from bridge.sim.account import AccountState, history_frame, history_update, ladder_frame
from bridge.sim.config import SimConfig
from bridge.sim.connection import MdSub, SimConnection
from bridge.sim.market import QuoteState, combo_values, instrument, md_frame
from bridge.sim.orders import Element, OrderEngine

if TYPE_CHECKING:
    from bridge.sim.oauth import SimOAuth

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.session_id = secrets.token_hex(16)
        self.internal_session_id = self._new_internal_session()
        # over OAuth no brokerage session exists until POST /iserver/auth/ssodh/init
        self.oauth: SimOAuth | None = None
        self.brokerage_open = config.oauth_dir is None
        self.ssodh_errors = 0  # fault: the next ssodh/init calls answer 500
        self.upgrade_agents: Counter[str] = Counter()
        self.sessions_presented: list[tuple[str, str | None]] = []  # ("cookie" | "message", session id)
        self.authenticated = self.brokerage_open
        self.competing = False
        self.accounts_listed = False
        self.sor_suppressed = False
        self.connections: dict[int, SimConnection] = {}
        self.connections_total = 0
        self.frames: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()
        self.faults: list[dict[str, Any]] = []
        self.refused_upgrades = 0
        self.rest_requests = 0
        self.rest_throttled = 0
        self.rest_window = (0, 0)  # (monotonic second, requests in it)
        # fault switches
        self.stall_until = 0.0
        self.binary_until = 0.0
        self.refuse_count = 0
        self.refuse_status = 503
        self.refuse_until = 0.0
        self.line_limit: int | None = None
        self.line_limit_mode = "error"
        self.slow_reader_limit: int | None = None
        self.silent_until: dict[str, float] = {}  # topic -> monotonic time its silence ends
        self._server_epoch = self.rng.randint(0, 20)
        self._server_ids: dict[int, str] = {}
        self._smh: dict[str, tuple[int, int]] = {}  # serverId -> (connection id, conid)
        self._next_smh = 195_436
        self._smh_ticks: dict[str, int] = {}  # serverId -> last tickNum sent
        self.quotes: dict[int, QuoteState] = {}
        self.account = AccountState(config.account, self.rng)
        self.orders = OrderEngine(config, self.rng, self.last_price, self._on_sor, self._on_str)
        self._tasks: list[asyncio.Task[None]] = []
        self._pnl_partial = False
        self._order_flow_count = 0
        for conid in config.conids:  # these quotes move from the start, subscribed or not
            self.quote(conid)

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._every(self.config.md_interval_s, self._md_tick)),
            loop.create_task(self._every(self.config.pnl_interval_s, self._pnl_tick)),
            loop.create_task(self._every(self.config.ledger_interval_s, self._ledger_tick)),
            loop.create_task(self._every(self.config.summary_interval_s, self._summary_tick)),
            loop.create_task(self._every(self.config.bars_update_s, self._bars_tick)),
        ]
        if self.config.order_flow_s:
            self._tasks.append(loop.create_task(self._every(self.config.order_flow_s, self._order_tick)))

    def spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.orders.close()
        for conn in list(self.connections.values()):
            conn.lost()

    def add(self, conn: SimConnection) -> None:
        self.connections[conn.id] = conn
        self.connections_total += 1

    def remove(self, conn: SimConnection) -> None:
        conn.lost()
        self.connections.pop(conn.id, None)
        for server_id in list(conn.smh):
            self._smh.pop(server_id, None)

    # ----------------------------------------------------------------------------- state queries
    def is_stalled(self) -> bool:
        return self.stall_until > 0 and time.monotonic() < self.stall_until

    def is_silent(self, topic: str) -> bool:
        until = self.silent_until.get(topic)
        return until is not None and time.monotonic() < until

    def binary_frames(self) -> bool:
        return self.binary_until > 0 and time.monotonic() < self.binary_until

    def bursting_connections(self) -> int:
        return sum(1 for c in self.connections.values() if c.md and not c.closed)

    def data_flowing(self) -> bool:
        """Brokerage topics (smd, smh, sbd, sor, str) need an authenticated brokerage session."""
        return self.authenticated

    def sts_frame(self) -> dict[str, Any]:
        if self.competing:
            return frames.sts_competing()
        return frames.sts_full(self.config.username, self.authenticated, False)

    def server_id(self, conid: int) -> str:
        sid = self._server_ids.get(conid)
        if sid is None:
            sid = f"q{(self._server_epoch + len(self._server_ids)) % 33}"
            self._server_ids[conid] = sid
        return sid

    def quote(self, conid: int) -> QuoteState:
        quote = self.quotes.get(conid)
        if quote is None:
            quote = self.quotes[conid] = QuoteState(instrument(conid), self.rng)
        return quote

    def last_price(self, conid: int) -> float:
        return self.quote(conid).last

    def md_snapshot(self, target: str, sub: MdSub) -> dict[str, Any]:
        if sub.legs:
            values = {**self.combo_values(sub), "6509": "RpB"}
        else:
            values = self.quote(sub.conid).snapshot(sub.fields)
        return md_frame(target, sub.conid, self.server_id(sub.conid), int(time.time() * 1000), values)

    def combo_values(self, sub: MdSub) -> dict[str, str | int | float]:
        """A combo's spread quote, derived from its legs (see ``market.combo_values``)."""
        return combo_values([(self.quote(conid), ratio) for conid, ratio in sub.legs], sub.fields)

    def line_refusal(self, target: str) -> dict[str, Any] | None:
        """Market-data line exhaustion (behaviour invented: the real socket's answer is unknown).

        None: a line is free. Otherwise the frame to send ({} in ``silent`` mode)."""
        if self.line_limit is None:
            return None
        in_use = {t for c in self.connections.values() for t in c.md}
        if target in in_use or len(in_use) < self.line_limit:
            return None
        if self.line_limit_mode == "silent":
            return {}
        return {"error": f"Market data lines exhausted: limit {self.line_limit} reached", "code": 101,
                "topic": f"smd+{target}"}

    def new_server_epoch(self) -> None:
        self._server_epoch += 7
        self._server_ids.clear()
        self.internal_session_id = self._new_internal_session()

    def _new_internal_session(self) -> str:
        return f"{secrets.token_hex(4)}.{secrets.randbelow(1 << 32):08x}"

    # ----------------------------------------------------------------------------- fan-out
    def broadcast(self, obj: Any, kind: str, only: Callable[[SimConnection], bool] | None = None) -> None:
        payload = frames.dumps(obj)
        for conn in list(self.connections.values()):
            if conn.authenticated and (only is None or only(conn)):
                conn.write_bytes(payload, kind)

    def _on_sor(self, elements: list[Element]) -> None:
        if not self.data_flowing() or self.sor_suppressed:
            return
        for conn in list(self.connections.values()):
            if not (conn.authenticated and conn.sor):
                continue
            wanted = elements
            if conn.sor_filter:
                wanted = [e for e in elements if self._order_status(e).lower() == conn.sor_filter.lower()]
            if wanted:
                conn.write({"topic": "sor", "args": wanted}, "sor")

    def _order_status(self, element: Element) -> str:
        order = self.orders.record.orders.get(element.get("orderId", -1), {})
        return str(element.get("status") or order.get("status") or "")

    def _on_str(self, execution: Element) -> None:
        if self.data_flowing():
            self.broadcast({"topic": "str", "args": [execution]}, "str", lambda c: c.str_)

    def open_history(self, conn: SimConnection, conid: int, args: dict[str, Any]) -> dict[str, Any]:
        if len(self._smh) >= self.config.max_smh:  # answer invented; the limit itself is documented
            return {"error": f"Maximum number of concurrent historical requests ({self.config.max_smh}) "
                             "reached", "code": 429, "topic": "smh"}
        self._next_smh += 1
        server_id = str(self._next_smh)
        self._smh[server_id] = (conn.id, conid)
        conn.smh[server_id] = conid
        return history_frame(conid, server_id, self.rng, args, live=self.config.bars_shape == "live")

    def close_history(self, conn: SimConnection, server_id: str) -> bool:
        conn.smh.pop(server_id, None)
        self._smh_ticks.pop(server_id, None)
        return self._smh.pop(server_id, None) is not None

    def _bars_tick(self) -> None:
        """Live shape: every open ``smh`` streams ``tickNum`` updates until ``umh`` (reference §2.2)."""
        if self.config.bars_shape != "live" or not self.data_flowing():
            return
        for server_id, (conn_id, conid) in list(self._smh.items()):
            conn = self.connections.get(conn_id)
            if conn is None or not conn.authenticated:
                continue
            tick = self._smh_ticks[server_id] = self._smh_ticks.get(server_id, 0) + 1
            conn.write(history_update(conid, server_id, tick, self.quote(conid), self.rng), "smh")

    def send_ladder(self, conn: SimConnection, topic: str) -> None:
        if self.data_flowing():
            conid = int(topic.split("+")[2]) if topic.count("+") >= 2 else 0
            conn.write(ladder_frame(topic, self.quote(conid), self.rng), "sbd")

    # ----------------------------------------------------------------------------- timers
    def _order_tick(self) -> None:
        """Order flow on its own (``order_flow_s``): a small market order, BUY and SELL in turn,
        placed and confirmed as a client would, so orders and fills stream without a client."""
        self._order_flow_count += 1
        side = "BUY" if self._order_flow_count % 2 else "SELL"
        conids = self.config.conids or (265598,)
        conid = conids[self._order_flow_count % len(conids)]
        order = {"conid": conid, "side": side, "quantity": 5, "orderType": "MKT", "tif": "DAY"}
        _, answer = self.orders.place(self.config.account, {"orders": [order]})
        while isinstance(answer, list) and answer and "message" in answer[0] and "id" in answer[0]:
            _, answer = self.orders.reply(answer[0]["id"], True)

    async def _every(self, interval_s: float, tick: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                tick()
            except Exception:  # a bug in one tick must not stop the gateway's clock
                log.exception("simulator timer failed")

    async def _heartbeat_loop(self) -> None:
        """``system`` hb on a gateway-global phase: every socket gets the same ``hb`` value."""
        period = self.config.heartbeat_s
        while True:
            now = time.time()
            await asyncio.sleep((math.floor(now / period) + 1) * period - now)
            self.broadcast(frames.heartbeat(int(time.time() * 1000)), "system")
            if not self.authenticated and not self.competing:
                for frame in frames.sts_lost():  # repeats while unauthenticated (reference §3.2)
                    self.broadcast(frame, "sts")

    def _md_tick(self) -> None:
        now = asyncio.get_running_loop().time()
        flowing = self.data_flowing()
        changed: dict[int, set[str]] = {}
        stamp = int(time.time() * 1000)
        for conn in list(self.connections.values()):
            conn.expire_md(now)
            if not (flowing and conn.authenticated and conn.md) or self.config.rate:
                continue
            for target, sub in conn.md.items():
                if sub.legs:
                    self._combo_tick(conn, target, sub, changed, stamp)
                    continue
                if sub.conid not in changed:
                    changed[sub.conid] = self.quote(sub.conid).step()
                values = self.quote(sub.conid).delta(changed[sub.conid], sub.fields)
                if values:
                    conn.write(md_frame(target, sub.conid, self.server_id(sub.conid), stamp, values), "smd")
            for topic in conn.sbd.values():
                self.send_ladder(conn, topic)
        for conid in self.config.conids:
            if conid not in changed:
                self.quote(conid).step()

    def _combo_tick(
        self, conn: SimConnection, target: str, sub: MdSub, changed: dict[int, set[str]], stamp: int
    ) -> None:
        """A combo's frame whenever a leg moved: its requested spread fields, all of them."""
        for conid, _ in sub.legs:
            if conid not in changed:
                changed[conid] = self.quote(conid).step()
        if any(changed[conid] for conid, _ in sub.legs):
            values = self.combo_values(sub)
            if values:
                conn.write(md_frame(target, sub.conid, self.server_id(sub.conid), stamp, values), "smd")

    def _pnl_tick(self) -> None:
        self.account.step()
        self._pnl_partial = not self._pnl_partial
        self.broadcast(self.account.pnl_frame(self._pnl_partial), "spl", lambda c: c.spl)

    def _ledger_tick(self) -> None:
        for conn in list(self.connections.values()):
            for sub in conn.sld.values():
                blank = {"LedgerListEUR"} if sub.sent else set()  # unchanged currency: a blank row
                sub.sent += 1
                conn.write(self.account.ledger_frame(sub.keys, sub.fields, blank), "sld")

    def _summary_tick(self) -> None:
        for conn in list(self.connections.values()):
            for sub in conn.ssd.values():
                conn.write(self.account.summary_frame(sub.keys, sub.fields), "ssd")

    # ----------------------------------------------------------------------------- reporting
    def stats(self) -> dict[str, Any]:
        return {
            "authenticated": self.authenticated,
            "competing": self.competing,
            "connections_open": len(self.connections),
            "connections_total": self.connections_total,
            "connections": [
                {"id": c.id, "authenticated": c.authenticated, "frames": dict(c.frames),
                 "subscriptions": c.subscriptions(), "backlog_bytes": c.backlog_bytes()}
                for c in self.connections.values()
            ],
            "frames": dict(self.frames),
            "suppressed": dict(self.suppressed),
            "faults": list(self.faults),
            "refused_upgrades": self.refused_upgrades,
            "rest_requests": self.rest_requests,
            "rest_throttled": self.rest_throttled,
            "orders": len(self.orders.record.orders),
            "executions": len(self.orders.record.executions),
            "brokerage_open": self.brokerage_open,
            "upgrade_user_agents": dict(self.upgrade_agents),
            **({"oauth": self.oauth.stats()} if self.oauth is not None else {}),
        }
