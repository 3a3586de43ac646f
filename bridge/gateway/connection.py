"""The only websocket user: holds the gateway socket open forever.

:class:`GatewayConnection` runs the start-up sequence over REST (``/tickle``,
auth status, ``ssodh/init`` when configured, the ``/iserver/accounts``
pre-flight), connects with the session cookie, feeds every message (bytes) to
the normalizer and the :class:`GatewayProtocol`, writes the protocol's frames,
runs its timers through ``next_deadline()``/``tick()``, performs its actions
(reconnect, REST tickle, auth polling, re-authentication, reconciliation) and
reconnects with its backoff, forever, until ``stop()``.

Everything it produces (normalized events, lifecycle events, reconciled orders
and executions) goes to one ``on_events(events, received_ns)`` callback, in
order, from the event loop.

The socket is picows (a Cython websocket client over aiofastnet's TLS transport): about
0.7 µs of CPU per received frame over TLS against about 6 µs for the ``websockets`` library,
which at market-data rates is the difference between the socket and the bridge's own work
being the limit. picows hands over frames from its ``data_received``; :class:`_Inbox` collects
whole messages there and the serve loop takes everything collected at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bridge.errors import GatewayError, GatewayUnavailable
from bridge.events import Event, Execution, Quote
from bridge.gateway.failures import FailureLog, close_text, describe_error, is_certificate_failure, tls_hint
from bridge.gateway.tls import build_ssl
from bridge.ingest.session import GatewayProtocol
from bridge.ingest.session_types import (
    Action,
    ExpectSnapshot,
    PollAuthStatus,
    Reauthenticate,
    Reconcile,
    Reconnect,
    TickleRest,
)
from bridge.ingest.subscriptions import HistoryRequest, Subscription

if TYPE_CHECKING:
    from bridge.gateway.rest import GatewayRest

log = logging.getLogger(__name__)

EventCallback = Callable[[Sequence[Event], int], Awaitable[None]]
_NS_PER_S = 1_000_000_000


_TEXT, _BINARY, _CONTINUATION, _CLOSE = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION,
                                         WSMsgType.CLOSE)  # fmt: skip


class _Inbox(WSListener):
    """Whole messages received on one socket, waiting for the serve loop.

    picows calls ``on_ws_frame`` synchronously for every frame parsed from the bytes just read;
    data messages (fragmented ones reassembled) are appended as bytes, close frames answered.
    Past ``pause_at`` waiting messages the socket stops reading (TCP backpressure on the gateway)
    until the serve loop takes them. Pings are answered by picows itself.
    """

    def __init__(self, max_message_bytes: int, pause_at: int) -> None:
        self.messages: list[bytes] = []
        self.disconnected = False
        self._max_message_bytes = max_message_bytes
        self._pause_at = pause_at
        self._transport: WSTransport | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._parts: list[bytes] | None = None  # a fragmented message being reassembled
        self._parts_bytes = 0

    # picows callbacks (synchronous, from the transport's data_received)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if (kind is _TEXT or kind is _BINARY) and frame.fin and self._parts is None:
            self.messages.append(frame.get_payload_as_bytes())
        elif kind is _TEXT or kind is _BINARY or kind is _CONTINUATION:
            self._fragment(transport, frame, first=kind is not _CONTINUATION)
        elif kind is _CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        else:
            return  # PING is answered and PONG consumed by picows
        if len(self.messages) >= self._pause_at and not self._paused:
            self._paused = True
            transport.underlying_transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fragment(self, transport: WSTransport, frame: WSFrame, first: bool) -> None:
        if first == (self._parts is not None):  # RFC 6455 §5.4: no interleaving, no stray continuation
            transport.send_close(WSCloseCode.PROTOCOL_ERROR, b"unexpected fragment")
            transport.disconnect()
            return
        parts = self._parts = [] if first else self._parts
        assert parts is not None
        self._parts_bytes += frame.payload_size
        if self._parts_bytes > self._max_message_bytes:
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            transport.disconnect()
            return
        parts.append(frame.get_payload_as_bytes())
        if frame.fin:
            self.messages.append(b"".join(parts))
            self._parts, self._parts_bytes = None, 0

    # the serve loop's side

    async def take(self) -> list[bytes]:
        """Every message received so far, waiting for one if there is none; [] once the socket is
        gone and everything it delivered has been taken."""
        while not self.messages:
            if self.disconnected:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        messages, self.messages = self.messages, []
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.underlying_transport.resume_reading()
        return messages


def _code(code: object) -> int:
    """A close code as a number (picows gives application codes outside its enum as plain ints)."""
    value = getattr(code, "value", code)
    return value if isinstance(value, int) else 1006


class FrameNormalizer(Protocol):
    """What the connection needs from ``bridge.ingest.normalize.normalizer.Normalizer``."""

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
    ping_interval_s: float | None = 20.0  # websocket ping after this long without a frame; None: never
    ping_timeout_s: float = 20.0  # no pong within this (capped at ping_interval_s): the socket is dropped
    max_frame_bytes: int = 16 * 1024 * 1024
    max_queued_frames: int = 4096  # received, not yet normalized: past this the socket stops reading
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
        self._ws: WSTransport | None = None
        self._close_reason: str | None = None
        self._resynced_before_ms: int | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: dict[type[Action], asyncio.Task[None]] = {}
        tls = self.settings.ws_url.startswith("wss:")
        self._ssl = build_ssl(self.settings.insecure_tls, self.settings.ca_file) if tls else None
        self._failures = FailureLog(log, "gateway", self._hint)

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
        await self._close(WSCloseCode.OK, "bridge stopping")

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff, until ``stop()``."""
        try:
            while not self._stopping.is_set():
                if not await self._wait_for_backoff():
                    break
                self.connect_attempts += 1
                opened = await self._open()
                if opened is not None and self._stopping.is_set():
                    opened[0].disconnect()
                elif opened is not None:
                    await self._serve(*opened)
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

    async def _open(self) -> tuple[WSTransport, _Inbox, str | None] | None:
        settings = self.settings
        ping_s = settings.ping_interval_s
        try:
            session_id = await self._prepare()
            async with asyncio.timeout(settings.open_timeout_s):
                transport, inbox = await ws_connect(
                    lambda: _Inbox(settings.max_frame_bytes, settings.max_queued_frames),
                    settings.ws_url,
                    ssl_context=self._ssl,
                    websocket_handshake_timeout=settings.open_timeout_s,
                    enable_auto_ping=ping_s is not None,
                    auto_ping_idle_timeout=ping_s or 20.0,
                    auto_ping_reply_timeout=min(settings.ping_timeout_s, ping_s or 20.0),
                    max_frame_size=settings.max_frame_bytes,
                    extra_headers=self._headers(session_id),
                    max_redirects=0,
                    logger_name="gateway.ws",
                )
        except (GatewayError, OSError, TimeoutError, WSError) as exc:
            reason = f"connect failed: {describe_error(exc)}"
            self._failures.failed(reason)  # once per change, then a periodic summary
            self.protocol.connect_failed(reason, self.clock_ns())
            await self._flush()
            return None
        assert isinstance(inbox, _Inbox)
        self._failures.succeeded()
        return transport, inbox, session_id

    def _hint(self, reason: str) -> str | None:
        if is_certificate_failure(reason):
            return tls_hint(self.settings.ws_url.replace("wss:", "https:", 1), self.settings.insecure_tls)
        return None

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

    async def _serve(self, ws: WSTransport, inbox: _Inbox, session_id: str | None) -> None:
        self._ws = ws
        self._close_reason = None
        self.normalizer.connection_reset()
        self.protocol.connection_opened(self.clock_ns(), session_id)
        await self._flush()
        timers = asyncio.create_task(self._run_timers())
        try:
            while messages := await inbox.take():
                await self._receive(messages)
        finally:
            timers.cancel()
            self._ws = None
            ws.disconnect()  # no-op unless this task is being cancelled
            await asyncio.gather(timers, return_exceptions=True)
            reason = self._close_reason or await self._closed_how(ws)
            self.protocol.connection_lost(reason, self.clock_ns())
            self.protocol.frames_to_send()  # nothing may be written to a dead socket
            await self._flush()
            log.warning("gateway socket lost: %s", reason)

    async def _closed_how(self, ws: WSTransport) -> str:
        """``closed <code>: <reason>`` from the gateway's close frame (1006 when none came), or the
        local failure picows reports (protocol violation, ping timeout)."""
        try:
            async with asyncio.timeout(self.settings.close_timeout_s):
                await ws.wait_disconnected()
        except TimeoutError:
            return close_text(1006, "socket did not finish closing")
        except Exception as exc:  # noqa: BLE001 - picows re-raises whatever ended the socket locally
            return close_text(1006, describe_error(exc))
        handshake = ws.close_handshake
        if handshake is not None and handshake.recv is not None:
            return close_text(_code(handshake.recv.code), handshake.recv.reason)
        if handshake is not None and handshake.sent is not None:
            return close_text(_code(handshake.sent.code), handshake.sent.reason)
        return close_text(1006, None)

    async def _receive(self, messages: list[bytes]) -> None:
        """Handle messages taken from the socket together, without an await per frame.

        They count as received at the same instant. A run of frames that each normalize to one
        plain quote (a quote never makes the protocol act, send or publish) goes to the protocol
        and to ``on_events`` as one batch; any other frame first closes the batch, then is handled
        on its own, so the order of events holds. Every ``max_batch_frames`` the loop yields, so the
        publisher and the timers keep pace.
        """
        normalize, limit = self.normalizer.normalize, self.settings.max_batch_frames
        batch: list[Quote] = []
        now_ns = self.clock_ns()
        for count, data in enumerate(messages, 1):
            events = normalize(data, now_ns)
            first = events[0]
            if type(first) is Quote and len(events) == 1:
                batch.append(first)
            else:
                if batch:
                    await self._quotes(batch, now_ns)
                    batch = []
                await self._frame_events(events, now_ns)
                now_ns = self.clock_ns()
            if count % limit == 0:
                if batch:
                    await self._quotes(batch, now_ns)
                    batch = []
                    await self._flush()
                await asyncio.sleep(0)
                now_ns = self.clock_ns()
        if batch:
            await self._quotes(batch, now_ns)
            await self._flush()

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
        if ws is not None and not ws.is_close_frame_sent:
            for frame in frames:  # written without waiting; a lost socket is reported by the serve loop
                ws.send(_TEXT, frame.encode())
        lifecycle = self.protocol.events_to_publish()
        if lifecycle:
            await self.on_events(lifecycle, self.clock_ns())

    # ------------------------------------------------------------------------------ actions

    def _perform(self, action: Action) -> None:
        if isinstance(action, ExpectSnapshot):
            self.normalizer.expect_snapshot(action.target)
        elif isinstance(action, Reconnect):
            self._close_reason = action.reason
            self._background(action, self._close(WSCloseCode.OK, "reconnect"))
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

    async def _close(self, code: WSCloseCode, reason: str) -> None:
        """Close handshake: send a close frame, give the gateway ``close_timeout_s`` to answer (the
        inbox answers its close frame by disconnecting), then drop the connection regardless."""
        ws = self._ws
        if ws is None or ws.is_disconnected:
            return
        if not ws.is_close_frame_sent:
            ws.send_close(code, reason.encode())
        try:
            async with asyncio.timeout(self.settings.close_timeout_s):
                await ws.wait_disconnected()
        except TimeoutError:
            ws.disconnect(graceful=False)
        except Exception:  # noqa: BLE001 - the serve loop reports how the socket ended
            pass

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
