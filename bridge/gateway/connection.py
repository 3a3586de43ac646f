"""The only websocket user: holds the gateway socket open forever.

:class:`GatewayConnection` runs the start-up sequence over REST (``/tickle``,
auth status, ``ssodh/init`` when configured, the ``/iserver/accounts``
pre-flight), connects with the session cookie, feeds every frame (bytes,
``decode=False``) to the normalizer and the :class:`GatewayProtocol`, writes
the protocol's frames, runs its timers through ``next_deadline()``/``tick()``,
performs its actions (reconnect, REST tickle, auth polling, re-authentication,
reconciliation) and reconnects with its backoff, forever, until ``stop()``.

Everything it produces (normalized events, lifecycle events, reconciled orders
and executions) goes to one ``on_events(events, received_ns)`` callback, in
order, from the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import Opcode

from bridge.errors import GatewayError, GatewayUnavailable
from bridge.events import Event, Execution, Quote
from bridge.gateway.protocol import (
    Action,
    ExpectSnapshot,
    GatewayProtocol,
    HistoryRequest,
    PollAuthStatus,
    Reauthenticate,
    Reconcile,
    Reconnect,
    Subscription,
    TickleRest,
)
from bridge.gateway.tls import build_ssl

if TYPE_CHECKING:
    from bridge.gateway.rest import GatewayRest

log = logging.getLogger(__name__)

EventCallback = Callable[[Sequence[Event], int], Awaitable[None]]
_NS_PER_S = 1_000_000_000


def _waiting_message(ws: ClientConnection) -> bytes | None:
    """The next message if websockets has already received all of it, taken without an await;
    else None (then ``recv`` is the way to wait for it).

    Does what ``recv(decode=False)`` does for a one-frame message already queued, minus three
    coroutine layers: reads the connection's frame queue (``recv_messages``). If that ever changes
    shape, the answer is None and frames are simply handled one ``recv`` at a time.
    """
    assembler = getattr(ws, "recv_messages", None)
    queue = getattr(getattr(assembler, "frames", None), "queue", None)
    if not queue or getattr(assembler, "get_in_progress", True):
        return None
    frame = queue[0]
    if getattr(frame, "fin", False) is not True or getattr(frame, "opcode", None) not in _DATA_OPCODES:
        return None
    queue.popleft()
    assembler.maybe_resume()  # type: ignore[union-attr]
    data = frame.data
    return data if type(data) is bytes else bytes(data)


_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY)


class FrameNormalizer(Protocol):
    """What the connection needs from ``bridge.gateway.normalizer.Normalizer``."""

    def normalize(self, data: bytes | str, received_ns: int) -> list[Event]: ...

    def expect_snapshot(self, target: int | str) -> None: ...

    def connection_reset(self) -> None: ...

    def reconcile_order(self, row: Mapping[str, Any]) -> Event | None: ...

    def reconcile_execution(self, row: Mapping[str, Any]) -> Event | None: ...


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    ws_url: str = "wss://localhost:5000/v1/api/ws"
    insecure_tls: bool = False
    ca_file: str | None = None
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0
    max_frame_bytes: int = 16 * 1024 * 1024
    auth_wait_s: float = 10.0  # start-up: how long to wait for the brokerage session per attempt
    auth_check_s: float = 1.0
    reconcile_trades_days: int | None = None
    max_timer_sleep_s: float = 1.0  # bound on how late a newly earlier deadline is noticed
    max_batch_frames: int = 256  # frames handled before the reader yields to the other tasks


class GatewayConnection:
    """Runs one gateway session: start-up, socket, timers, actions, reconnects."""

    def __init__(
        self,
        protocol: GatewayProtocol,
        rest: GatewayRest,
        normalizer: FrameNormalizer,
        on_events: EventCallback,
        settings: ConnectionSettings | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.protocol = protocol
        self.rest = rest
        self.normalizer = normalizer
        self.on_events = on_events
        self.settings = settings or ConnectionSettings()
        self.clock_ns = clock_ns
        self.connect_attempts = 0
        self._ws: ClientConnection | None = None
        self._close_reason: str | None = None
        self._resynced_before_ms: int | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: dict[type[Action], asyncio.Task[None]] = {}
        tls = self.settings.ws_url.startswith("wss:")
        self._ssl = build_ssl(self.settings.insecure_tls, self.settings.ca_file) if tls else None

    # ------------------------------------------------------------------------------ public API

    @property
    def ready(self) -> bool:
        """Socket open and the session usable (for ``/readyz``)."""
        return self._ws is not None and self.protocol.usable

    async def subscribe(self, sub: Subscription) -> None:
        self.protocol.subscribe(sub, self.clock_ns())
        await self._flush()

    async def unsubscribe(self, key: str) -> bool:
        found = self.protocol.unsubscribe(key, self.clock_ns())
        await self._flush()
        return found

    async def request_history(self, request: HistoryRequest) -> None:
        self.protocol.request_history(request, self.clock_ns())
        await self._flush()

    async def stop(self) -> None:
        """End ``run()``: close the socket and cancel background calls."""
        self._stopping.set()
        self._wake.set()
        self._close_reason = "bridge stopping"
        if self._ws is not None:
            await self._ws.close()

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff, until ``stop()``."""
        try:
            while not self._stopping.is_set():
                if not await self._wait_for_backoff():
                    break
                self.connect_attempts += 1
                ws, session_id = await self._open()
                if ws is not None and self._stopping.is_set():
                    await ws.close()
                elif ws is not None:
                    await self._serve(ws, session_id)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # ------------------------------------------------------------------------------ connecting

    async def _wait_for_backoff(self) -> bool:
        at_ns = self.protocol.reconnect_at_ns
        if at_ns is not None:
            delay_s = max(0.0, (at_ns - self.clock_ns()) / _NS_PER_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)
        return not self._stopping.is_set()

    async def _open(self) -> tuple[ClientConnection | None, str | None]:
        try:
            session_id = await self._prepare()
            ws = await connect(
                self.settings.ws_url,
                ssl=self._ssl,
                compression=None,
                additional_headers=self._headers(session_id),
                proxy=None,
                open_timeout=self.settings.open_timeout_s,
                close_timeout=self.settings.close_timeout_s,
                ping_interval=self.settings.ping_interval_s,
                max_size=self.settings.max_frame_bytes,
            )
        except (GatewayError, OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            reason = f"connect failed: {type(exc).__name__}: {exc}"
            log.warning("gateway %s", reason)
            self.protocol.connect_failed(reason, self.clock_ns())
            await self._flush()
            return None, None
        return ws, session_id

    async def _prepare(self) -> str | None:
        """``/tickle`` -> session id; make sure the brokerage session is up; accounts pre-flight."""
        tickle = await self.rest.tickle()
        auth = await self.rest.auth_status()
        if not auth.usable and self.protocol.settings.ssodh_init:
            log.info("gateway brokerage session not authenticated; calling ssodh/init")
            await self.rest.ssodh_init()
        waited_s = 0.0
        while not auth.usable:
            if waited_s >= self.settings.auth_wait_s:
                raise GatewayUnavailable(f"brokerage session not authenticated: {auth}")
            await asyncio.sleep(self.settings.auth_check_s)
            waited_s += self.settings.auth_check_s
            auth = await self.rest.auth_status()
        await self.rest.accounts()
        return tickle.session_id

    def _headers(self, session_id: str | None) -> dict[str, str]:
        cookie = self.rest.cookie_header(session_id)
        return {"Cookie": cookie} if cookie else {}

    # ------------------------------------------------------------------------------ serving

    async def _serve(self, ws: ClientConnection, session_id: str | None) -> None:
        self._ws = ws
        self._close_reason = None
        self.normalizer.connection_reset()
        self.protocol.connection_opened(self.clock_ns(), session_id)
        await self._flush()
        timers = asyncio.create_task(self._run_timers())
        reason = "closed"
        try:
            while True:
                await self._receive(ws, await ws.recv(decode=False))
        except ConnectionClosed as exc:
            reason = f"closed {exc.rcvd.code if exc.rcvd else 1006}: {exc.rcvd.reason if exc.rcvd else ''}"
        finally:
            timers.cancel()
            self._ws = None
            await asyncio.gather(timers, return_exceptions=True)
            reason = self._close_reason or reason
            self.protocol.connection_lost(reason, self.clock_ns())
            self.protocol.frames_to_send()  # nothing may be written to a dead socket
            await self._flush()
            log.warning("gateway socket lost: %s", reason)

    async def _receive(self, ws: ClientConnection, data: bytes) -> None:
        """Handle ``data`` and every further message already received, without an await per frame.

        Frames taken from the socket together count as received at the same instant. A run of
        frames that each normalize to one plain quote (a quote never makes the protocol act, send
        or publish) goes to the protocol and to ``on_events`` as one batch; any other frame first
        closes the batch, then is handled on its own exactly as before, so the order of events
        holds. After ``max_batch_frames`` the loop yields, so the publisher keeps pace.
        """
        batch: list[Quote] = []
        frames = 0
        limit = self.settings.max_batch_frames
        now_ns = self.clock_ns()
        while True:
            events = self.normalizer.normalize(data, now_ns)
            first = events[0]
            if type(first) is Quote and len(events) == 1:
                batch.append(first)
            else:
                if batch:
                    await self._quotes(batch, now_ns)
                    batch = []
                await self._frame_events(events, now_ns)
                now_ns = self.clock_ns()
            frames += 1
            if frames >= limit:
                break
            waiting = _waiting_message(ws)
            if waiting is None:
                break
            data = waiting
        if batch:
            await self._quotes(batch, now_ns)
            await self._flush()
        if frames >= limit:
            await asyncio.sleep(0)  # let the publisher and the timers run

    async def _quotes(self, quotes: list[Quote], now_ns: int) -> None:
        self.protocol.quotes_received(quotes, now_ns)
        await self.on_events(quotes, now_ns)

    async def _frame_events(self, events: list[Event], now_ns: int) -> None:
        state = self.protocol.state
        self.protocol.events_received(events, now_ns)
        await self.on_events(self._mark_resynced(events), now_ns)
        if self.protocol.state is not state:
            self._wake.set()
        await self._flush()

    def _mark_resynced(self, events: list[Event]) -> list[Event]:
        """Executions the socket replays (``str`` history) that happened before the session became
        usable were missed while blind: they are published as reconciled, like the REST copies."""
        cutoff_ms = self._resynced_before_ms
        if cutoff_ms is None:
            return events
        return [
            replace(e, reconciled=True)
            if type(e) is Execution
            and not e.reconciled
            and e.trade_time_ms is not None
            and e.trade_time_ms < cutoff_ms
            else e
            for e in events
        ]

    async def _run_timers(self) -> None:
        while True:
            deadline = self.protocol.next_deadline()
            delay_s = self.settings.max_timer_sleep_s
            if deadline is not None:
                delay_s = min(delay_s, max(0.0, (deadline - self.clock_ns()) / _NS_PER_S))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay_s)
            self.protocol.tick(self.clock_ns())
            await self._flush()

    async def _flush(self) -> None:
        """Perform the protocol's actions, write its frames, publish its lifecycle events."""
        for action in self.protocol.actions_to_perform():
            self._perform(action)
        frames = self.protocol.frames_to_send()
        ws = self._ws
        if ws is not None:
            try:
                for frame in frames:
                    await ws.send(frame)
            except ConnectionClosed:
                pass  # the receive loop reports the loss
        lifecycle = self.protocol.events_to_publish()
        if lifecycle:
            await self.on_events(lifecycle, self.clock_ns())

    # ------------------------------------------------------------------------------ actions

    def _perform(self, action: Action) -> None:
        if isinstance(action, ExpectSnapshot):
            self.normalizer.expect_snapshot(action.target)
        elif isinstance(action, Reconnect):
            self._close_reason = action.reason
            self._background(action, self._close())
        elif isinstance(action, TickleRest):
            self._background(action, self._rest_call(self.rest.tickle(), "tickle"))
        elif isinstance(action, PollAuthStatus):
            self._background(action, self._poll_auth())
        elif isinstance(action, Reauthenticate):
            self._background(action, self._rest_call(self.rest.reauthenticate(), "reauthenticate"))
        elif isinstance(action, Reconcile):
            self._resynced_before_ms = self.clock_ns() // 1_000_000
            self._background(action, self._reconcile(action))

    def _background(self, action: Action, work: Coroutine[Any, Any, None]) -> None:
        """At most one call of each kind at a time (a reconcile queues behind a running one)."""
        running = self._tasks.get(type(action))
        if running is not None and not running.done() and not isinstance(action, Reconcile):
            work.close()
            return
        self._tasks[type(action)] = asyncio.ensure_future(self._chain(running, work))

    @staticmethod
    async def _chain(previous: asyncio.Task[None] | None, work: Coroutine[Any, Any, None]) -> None:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        await work

    async def _close(self) -> None:
        ws = self._ws
        if ws is not None:
            await ws.close(code=1000, reason="reconnect")

    async def _rest_call(self, call: Awaitable[object], name: str) -> None:
        try:
            await call
        except GatewayError as exc:
            log.warning("gateway %s failed: %s", name, exc)

    async def _poll_auth(self) -> None:
        try:
            auth = await self.rest.auth_status()
        except GatewayError as exc:
            log.warning("gateway auth status poll failed: %s", exc)
            return
        self.protocol.auth_status_polled(auth.authenticated is True, auth.competing is True, self.clock_ns())
        await self._flush()

    async def _reconcile(self, action: Reconcile) -> None:
        """Publish orders and executions that changed while blind, marked reconciled."""
        try:
            orders = await self.rest.orders(force=True)
            trades = await self.rest.trades(self.settings.reconcile_trades_days)
        except GatewayError as exc:
            log.warning("gateway reconciliation failed: %s", exc)
            self.protocol.reconcile_finished(action.gap_id, 0, 0, self.clock_ns(), error=str(exc))
            await self._flush()
            return
        order_events = [e for e in map(self.normalizer.reconcile_order, orders) if e is not None]
        execution_events = [e for e in map(self.normalizer.reconcile_execution, trades) if e is not None]
        now_ns = self.clock_ns()
        if order_events or execution_events:
            await self.on_events([*order_events, *execution_events], now_ns)
        self.protocol.reconcile_finished(action.gap_id, len(order_events), len(execution_events), now_ns)
        await self._flush()
