"""One simulated gateway websocket: what it writes, what it is subscribed to, and how it answers
client messages (reference §1.5, §1.6, §2). Subscriptions live and die with the socket.

Frames are written straight to the transport as pre-encoded RFC 6455 frames (no await per frame);
``write`` is synchronous so gateway timers can fan a frame out to every socket in one loop turn.
While the transport has paused writing (a slow reader), writes wait in order in the socket's
:class:`~bridge.sim.socket_writer.SocketWriter` and go on as it drains.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from bridge.ingest.wire import ClientMessage, parse_client_message
from bridge.sim import frames
from bridge.sim.account import AccountState
from bridge.sim.config import SimConfig
from bridge.sim.frames import OP_BINARY, OP_TEXT, ws_header
from bridge.sim.market import burst_templates, combo_legs, conid_of
from bridge.sim.orders import OrderEngine
from bridge.sim.socket_writer import SocketWriter

log = logging.getLogger(__name__)

BURST_BATCH = 2048
BURST_FRAMES_PER_TARGET = 64  # distinct pre-encoded frames per target (6,400 for 100 targets)
BURST_BACKLOG_S = 0.1  # at a fixed rate, a backlog beyond this much is dropped
FLOOD_CHUNK_BYTES = 64 << 10  # a flood goes to the transport in pieces, so most of it can wait here


@dataclass(slots=True)
class MdSub:
    conid: int
    fields: frozenset[str]
    expires_at: float  # loop time
    legs: tuple[tuple[int, int], ...] = ()  # a combo's (leg conid, ratio)


@dataclass(slots=True)
class Filtered:
    keys: list[str]
    fields: list[str]
    sent: int = 0


class GatewayView(Protocol):
    """What a socket reads and asks of the gateway-global state (``bridge.sim.gateway.Gateway``)."""

    config: SimConfig
    rng: random.Random
    session_id: str
    internal_session_id: str
    accounts_listed: bool
    sessions_presented: list[tuple[str, str | None]]
    silent_until: dict[str, float]
    frames: Counter[str]
    suppressed: Counter[str]
    account: AccountState
    orders: OrderEngine

    def is_stalled(self) -> bool: ...

    def is_silent(self, topic: str) -> bool: ...

    def binary_frames(self) -> bool: ...

    def bursting_connections(self) -> int: ...

    def data_flowing(self) -> bool: ...

    def sts_frame(self) -> dict[str, Any]: ...

    def server_id(self, conid: int) -> str: ...

    def md_snapshot(self, target: str, sub: MdSub) -> dict[str, Any]: ...

    def line_refusal(self, target: str) -> dict[str, Any] | None: ...

    def open_history(self, conn: SimConnection, conid: int, args: dict[str, Any]) -> dict[str, Any]: ...

    def close_history(self, conn: SimConnection, server_id: str) -> bool: ...

    def send_ladder(self, conn: SimConnection, topic: str) -> None: ...


class SimConnection:
    def __init__(self, conn_id: int, ws: web.WebSocketResponse, request: web.BaseRequest,
                 gateway: GatewayView) -> None:  # fmt: skip
        assert ws.prepared, "websocket not prepared"
        self.id = conn_id
        self.ws = ws
        self.gateway = gateway
        self._out = SocketWriter(request)
        self._transport = self._out.transport
        self.authenticated = False
        self.closed = False
        self.frames: Counter[str] = Counter()
        self.md: dict[str, MdSub] = {}
        self.sor = False
        self.sor_filter: str | None = None
        self.str_ = False
        self.spl = False
        self.ssd: dict[str, Filtered] = {}
        self.sld: dict[str, Filtered] = {}
        self.sbd: dict[str, str] = {}  # account -> topic
        self.smh: dict[str, int] = {}  # serverId -> conid
        self._burst_task: asyncio.Task[None] | None = None
        self._burst_version = 0
        self._burst_frames: dict[tuple[str, frozenset[str]], list[tuple[bytes, bytes]]] = {}

    # ----------------------------------------------------------------------------- writing
    def write(self, obj: Any, kind: str) -> None:
        self.write_bytes(frames.dumps(obj), kind)

    def write_bytes(self, payload: bytes, kind: str, opcode: int | None = None) -> None:
        gateway = self.gateway
        if self.closed or self._transport.is_closing():
            return
        if gateway.is_stalled() or (gateway.silent_until and gateway.is_silent(kind)):
            gateway.suppressed[kind] += 1
            return
        if opcode is None:
            opcode = OP_BINARY if gateway.binary_frames() else OP_TEXT
        self._out.send(ws_header(len(payload), opcode) + payload)
        self.frames[kind] += 1
        gateway.frames[kind] += 1

    def flood(self, frame: bytes, count: int) -> None:
        """Queue ``count`` copies of one pre-encoded frame, at once (no await)."""
        if not (self.closed or self._transport.is_closing()):
            per_chunk = max(1, FLOOD_CHUNK_BYTES // max(1, len(frame)))
            for start in range(0, count, per_chunk):
                self._out.send(frame * min(per_chunk, count - start))
            self.frames["smd"] += count
            self.gateway.frames["smd"] += count

    def pause_reading(self) -> None:
        """Stop reading this socket (the client's writes then back up on its side)."""
        if not (self.closed or self._transport.is_closing()):
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not (self.closed or self._transport.is_closing()):
            self._transport.resume_reading()

    def write_raw(self, data: bytes) -> None:
        """Write pre-encoded websocket frames as they are."""
        if not (self.closed or self._transport.is_closing()):
            self._out.send(data)

    def backlog_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel (see ``SocketWriter.backlog_bytes``)."""
        return 0 if self.closed else self._out.backlog_bytes()

    async def close(self, code: int = 1000) -> None:
        self.closed = True
        self._stop_burst()
        self._out.flush()  # what was written goes before the close frame
        await self.ws.close(code=code, message=b"")

    def abort(self) -> None:
        self.closed = True
        self._stop_burst()
        self._out.drop()
        self._transport.abort()

    def lost(self) -> None:
        self.closed = True
        self._stop_burst()
        self._out.drop()

    # ----------------------------------------------------------------------------- session
    def open_session(self) -> None:
        """The connect burst: system success -> act -> sts (reference §1.4)."""
        gateway = self.gateway
        self.authenticated = True
        self.write(frames.system_success(gateway.config.username), "system")
        self.write(frames.act(gateway.config.account, gateway.internal_session_id), "act")
        self.write(gateway.sts_frame(), "sts")

    def drop_brokerage_subscriptions(self) -> None:
        self.md.clear()
        self.sor = self.str_ = False
        self.sbd.clear()
        self.smh.clear()
        self._stop_burst()

    def subscriptions(self) -> dict[str, Any]:
        return {
            "smd": sorted(self.md), "sor": self.sor, "str": self.str_, "spl": self.spl,
            "ssd": sorted(self.ssd), "sld": sorted(self.sld), "sbd": sorted(self.sbd.values()),
            "smh": sorted(self.smh),
        }

    # ----------------------------------------------------------------------------- reading
    def handle_text(self, text: str) -> None:
        msg = parse_client_message(text)
        if text.lstrip().startswith("{"):
            self._on_session_message(msg, text)
            return
        if not self.authenticated:
            return  # still waiting for a session: the gateway says nothing
        handler = _HANDLERS.get(msg.verb)
        if handler is None:
            self.write(frames.unknown_topic(text.strip()), "error")
            return
        handler(self, msg)

    def _on_session_message(self, msg: ClientMessage, text: str) -> None:
        if not self.authenticated:
            self.gateway.sessions_presented.append(("message", msg.session))
            if msg.session is not None and msg.session == self.gateway.session_id:
                self.open_session()
            return  # no echo, no error: wrong ids just leave the socket waiting
        if self.gateway.config.session_message_error:
            self.write(frames.unknown_topic(text.strip()), "error")

    def _tic(self, _msg: ClientMessage) -> None:
        reply = frames.dumps(frames.tic_reply(self.gateway.session_id, int(time.time() * 1000)))
        for _ in range(self.gateway.config.tic_replies):
            self.write_bytes(reply, "tic")

    def _ech(self, msg: ClientMessage) -> None:
        if self.gateway.config.echo_ech and msg.targets == ("hb",):
            self.write_bytes(b"ech+hb", "ech")

    # ----------------------------------------------------------------------------- market data
    def _smd(self, msg: ClientMessage) -> None:
        target = msg.target or ""
        if not target:
            self.write(frames.unknown_topic("smd"), "error")
            return
        gateway = self.gateway
        if gateway.config.require_accounts and not gateway.accounts_listed:
            self.write(frames.no_accounts("smd"), "error")
            return
        fields = frozenset(str(f) for f in (msg.args or {}).get("fields", []) if f is not None)
        expires = asyncio.get_running_loop().time() + gateway.config.smd_expiry_s
        existing = self.md.get(target)
        if existing is not None:
            existing.fields |= fields
            existing.expires_at = expires
            return
        refusal = gateway.line_refusal(target)
        if refusal is not None:
            if refusal:
                self.write(refusal, "error")
            return
        sub = MdSub(conid_of(target), fields, expires, combo_legs(target))
        self.md[target] = sub
        if gateway.data_flowing():
            snapshot = frames.dumps(gateway.md_snapshot(target, sub))
            for _ in range(2 if gateway.config.duplicate_first_snapshot else 1):
                self.write_bytes(snapshot, "smd")
        if gateway.config.rate:
            self._start_burst()

    def _umd(self, msg: ClientMessage) -> None:
        self.md.pop(msg.target or "", None)
        if not self.md:
            self._stop_burst()
        self._burst_version += 1

    def expire_md(self, now: float) -> None:
        for target in [t for t, sub in self.md.items() if sub.expires_at <= now]:
            del self.md[target]  # silent: the stream just stops (reference §2.1)

    def _start_burst(self) -> None:
        self._burst_version += 1
        if self._burst_task is None or self._burst_task.done():
            self._burst_task = asyncio.get_running_loop().create_task(self._burst())

    def _stop_burst(self) -> None:
        if self._burst_task is not None:
            self._burst_task.cancel()
            self._burst_task = None

    async def _burst(self) -> None:
        """Burst mode: this socket's share of ``rate`` smd frames/s, pre-encoded, one write per batch.

        Frames always use the text opcode (the ``binary`` fault does not apply to them)."""
        gateway = self.gateway
        total = float(gateway.config.rate or 1.0)
        loop = asyncio.get_running_loop()
        ring: list[tuple[bytes, bytes]] = []
        version, index, sent, start, rate = -1, 0, 0, loop.time(), 0.0
        while self.md and not self.closed:
            if version != self._burst_version:
                version, ring, rate = self._burst_version, await self._burst_ring(), 0.0  # pace from now on
                continue
            now = loop.time()
            share = total / max(1, gateway.bursting_connections())  # --rate is gateway-wide
            if share != rate:
                rate, sent, start = share, 0, now
            due = int((now - start) * rate) - sent
            if due > rate * BURST_BACKLOG_S:  # fell behind (a busy machine): pace on, no catch-up storm
                due = max(1, int(rate / 1000))  # one millisecond's worth
                start = now - (sent + due) / rate
            due = min(due, BURST_BATCH)
            if due <= 0 or not gateway.data_flowing() or gateway.is_stalled():
                await asyncio.sleep(max(0.001, 1.0 / rate))
                continue
            stamp = str(int(time.time() * 1000)).encode()
            parts: list[bytes] = []
            for _ in range(due):
                head, tail = ring[index]
                parts += (head, stamp, tail)
                index = (index + 1) % len(ring)
            self._out.send(b"".join(parts))
            sent += due
            self.frames["smd"] += due
            gateway.frames["smd"] += due
            if self._out.must_wait():
                await self._out.wait_writable()
                start = loop.time() - sent / rate  # no catch-up storm after a pause
            else:
                await asyncio.sleep(0)

    async def _burst_ring(self) -> list[tuple[bytes, bytes]]:
        # each target's frames are built once per socket (a client that subscribes one target at a
        # time would otherwise rebuild every earlier target's at each subscription), yielding to the
        # loop between targets: 100 targets take a second or more, heartbeats and other sockets go on
        cache = self._burst_frames
        per_target = []
        for target, sub in list(self.md.items()):
            frames_of = cache.get((target, sub.fields))
            if frames_of is None:
                server_id, rng = self.gateway.server_id(sub.conid), self.gateway.rng
                frames_of = burst_templates(target, server_id, sub.fields, rng, BURST_FRAMES_PER_TARGET)
                cache[target, sub.fields] = frames_of
                await asyncio.sleep(0)
            per_target.append(frames_of)
        return [tpl[i] for i in range(len(per_target[0])) for tpl in per_target] if per_target else []

    # ----------------------------------------------------------------------------- orders, trades
    def _sor(self, msg: ClientMessage) -> None:
        self.sor = True
        filters = (msg.args or {}).get("filters") or []
        self.sor_filter = str(filters[0]) if filters else None

    def _uor(self, _msg: ClientMessage) -> None:
        self.sor = False

    def _str(self, msg: ClientMessage) -> None:
        args = msg.args or {}
        self.str_ = True
        self.write({"topic": "str", "args": []}, "str")
        if args.get("realtimeUpdatesOnly") is True or not self.gateway.data_flowing():
            return
        days = int(args.get("days") or self.gateway.config.str_history_days)
        for execution in self.gateway.orders.history(days):
            bare = {k: v for k, v in execution.items() if k != "commission"}
            self.write({"topic": "str", "args": [bare]}, "str")
            self.write({"topic": "str", "args": [execution]}, "str")

    def _utr(self, _msg: ClientMessage) -> None:
        self.str_ = False

    # ----------------------------------------------------------------------------- account topics
    def _spl(self, _msg: ClientMessage) -> None:
        self.spl = True
        self.write(self.gateway.account.pnl_frame(partial=False), "spl")

    def _upl(self, _msg: ClientMessage) -> None:
        self.spl = False

    def _account(self, msg: ClientMessage) -> str:
        return msg.targets[0] if msg.targets else self.gateway.config.account

    def _ssd(self, msg: ClientMessage) -> None:
        args = msg.args or {}
        sub = Filtered(list(args.get("keys") or []), list(args.get("fields") or []))
        self.ssd[self._account(msg)] = sub
        self.write(self.gateway.account.summary_frame(sub.keys, sub.fields), "ssd")

    def _usd(self, msg: ClientMessage) -> None:
        self.ssd.pop(self._account(msg), None)
        self.write(frames.UNSUBSCRIBED_SUMMARY, "result")

    def _sld(self, msg: ClientMessage) -> None:
        args = msg.args or {}
        sub = Filtered(list(args.get("keys") or []), list(args.get("fields") or []))
        self.sld[self._account(msg)] = sub
        self.write(self.gateway.account.ledger_frame(sub.keys, sub.fields, set()), "sld")

    def _uld(self, msg: ClientMessage) -> None:
        self.sld.pop(self._account(msg), None)
        self.write(frames.UNSUBSCRIBED_LEDGER, "result")

    # ----------------------------------------------------------------------------- history, book
    def _smh(self, msg: ClientMessage) -> None:
        conid = conid_of(msg.target or "")
        frame = self.gateway.open_history(self, conid, msg.args or {})
        self.write(frame, "smh" if "topic" in frame else "error")

    def _umh(self, msg: ClientMessage) -> None:
        server_id = msg.targets[0] if msg.targets else ""
        if self.gateway.close_history(self, server_id) and self.gateway.config.umh_ack:
            self.write({"message": f"Unsubscribed {server_id}"}, "message")

    def _sbd(self, msg: ClientMessage) -> None:
        if len(msg.targets) < 2:
            self.write(frames.unknown_topic("sbd"), "error")
            return
        self.sbd[msg.targets[0]] = "sbd+" + "+".join(msg.targets)
        self.gateway.send_ladder(self, self.sbd[msg.targets[0]])

    def _ubd(self, msg: ClientMessage) -> None:
        self.sbd.pop(self._account(msg), None)


_HANDLERS = {
    "tic": SimConnection._tic,
    "ech": SimConnection._ech,
    "smd": SimConnection._smd,
    "umd": SimConnection._umd,
    "sor": SimConnection._sor,
    "uor": SimConnection._uor,
    "str": SimConnection._str,
    "utr": SimConnection._utr,
    "spl": SimConnection._spl,
    "upl": SimConnection._upl,
    "ssd": SimConnection._ssd,
    "usd": SimConnection._usd,
    "sld": SimConnection._sld,
    "uld": SimConnection._uld,
    "smh": SimConnection._smh,
    "umh": SimConnection._umh,
    "sbd": SimConnection._sbd,
    "ubd": SimConnection._ubd,
}
