"""The only websocket user: holds the gateway socket open forever.

:class:`GatewayConnection` runs the start-up sequence over REST (``/tickle``,
auth status, ``ssodh/init`` when configured, the ``/iserver/accounts``
pre-flight), connects with the session cookie, feeds the messages it reads (bytes)
to the sans-I/O :class:`~bridge.ingest.session.GatewaySession`, writes the
session's frames, runs its timers through ``next_deadline()``/``tick()``, performs
its actions (reconnect, REST tickle, auth polling, re-authentication, the REST
calls of a reconciliation) and reconnects with its backoff, forever, until
``stop()``. Every domain rule lives in the session.

Everything the session produces (normalized events, lifecycle events, reconciled
orders and executions) goes to one ``on_events(events, received_ns)`` callback, in
order, from the event loop.

The socket is picows (a Cython websocket client over aiofastnet's TLS transport): about
0.7 µs of CPU per received frame over TLS against about 6 µs for the ``websockets`` library,
which at market-data rates is the difference between the socket and the bridge's own work
being the limit. picows hands over frames from its ``data_received``; :class:`Inbox` collects
whole messages there and the serve loop takes everything collected at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from picows import WSCloseCode, WSError, WSMsgType, WSTransport, ws_connect

from bridge.errors import GatewayError, GatewayUnavailable
from bridge.events import Event
from bridge.gateway.failures import FailureLog, close_text, describe_error, is_certificate_failure, tls_hint
from bridge.gateway.inbox import Inbox, close_code
from bridge.gateway.oauth import WS_USER_AGENT
from bridge.gateway.tls import build_ssl
from bridge.ingest.session import GatewaySession
from bridge.ingest.session_types import (
    Action,
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


_TEXT = WSMsgType.TEXT
# A read that brought fewer messages than this is a trickle: the socket rests for the read pace
# (``read_pace_s``) before it is read again. A larger one means frames arrive faster than they are
# handled: reading goes straight on.
PACED_BELOW = 64


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
    read_pace_s: float = 0.005  # after a small read, the socket rests until this long after it began
    compete: bool = False  # ssodh/init takes the brokerage session over from another login
    session_id: str | None = field(default=None, repr=False)  # overrides the /tickle session id


class GatewayConnection:
    """Runs one gateway session: start-up, socket, timers, actions, reconnects."""

    def __init__(
        self,
        session: GatewaySession,
        rest: GatewayRest,
        on_events: EventCallback,
        settings: ConnectionSettings | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.session = session
        self.rest = rest
        self.on_events = on_events
        self.settings = settings or ConnectionSettings()
        self.clock_ns = clock_ns
        self.connect_attempts = 0
        self._ws: WSTransport | None = None
        self._close_reason: str | None = None
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
        return self._ws is not None and self.session.usable

    async def subscribe(self, sub: Subscription) -> Subscription | None:
        """Add or replace a desired subscription; returns the one it replaced."""
        replaced = self.session.subscribe(sub, self.clock_ns())
        await self._flush()
        return replaced

    async def unsubscribe(self, key: str) -> bool:
        found = self.session.unsubscribe(key, self.clock_ns())
        await self._flush()
        return found

    async def request_history(self, request: HistoryRequest) -> None:
        self.session.request_history(request, self.clock_ns())
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
        at_ns = self.session.reconnect_at_ns
        if at_ns is not None:
            delay_s = max(0.0, (at_ns - self.clock_ns()) / _NS_PER_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)
        return not self._stopping.is_set()

    async def _open(self) -> tuple[WSTransport, Inbox, str | None] | None:
        settings = self.settings
        ping_s = settings.ping_interval_s
        try:
            session_id = await self._prepare()
            async with asyncio.timeout(settings.open_timeout_s):
                transport, inbox = await ws_connect(
                    lambda: Inbox(settings.max_frame_bytes, settings.max_queued_frames),
                    self._ws_url(),
                    ssl_context=self._ssl,
                    websocket_handshake_timeout=settings.open_timeout_s,
                    enable_auto_ping=ping_s is not None,
                    enable_auto_pong=False,  # Inbox answers pings, within a write-buffer bound
                    auto_ping_idle_timeout=ping_s or 20.0,
                    auto_ping_reply_timeout=min(settings.ping_timeout_s, ping_s or 20.0),
                    max_frame_size=settings.max_frame_bytes,
                    extra_headers=self._headers(session_id),
                    max_redirects=0,
                    logger_name="gateway.ws",
                )
        except (GatewayError, OSError, TimeoutError, WSError) as exc:
            reason = self._redact(f"connect failed: {describe_error(exc)}")
            self._failures.failed(reason)  # once per change, then a periodic summary
            self.session.connect_failed(reason, self.clock_ns())
            await self._flush()
            return None
        assert isinstance(inbox, Inbox)
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
        if not auth.usable and (self.session.settings.ssodh_init or self.rest.oauth is not None):
            log.info("gateway brokerage session not authenticated; calling ssodh/init (compete %s)",
                     self.settings.compete)  # fmt: skip
            await self.rest.ssodh_init(compete=self.settings.compete)
            auth = await self.rest.auth_status()
        waited_s = 0.0
        while not auth.usable:
            if waited_s >= self.settings.auth_wait_s:
                raise GatewayUnavailable(f"brokerage session not authenticated: {auth}")
            await asyncio.sleep(self.settings.auth_check_s)
            waited_s += self.settings.auth_check_s
            auth = await self.rest.auth_status()
        _, selected = await self.rest.account_list()
        if selected is not None:
            self.session.account_listed(selected, self.clock_ns())
        return self.settings.session_id or tickle.session_id

    def _ws_url(self) -> str:
        """The socket's URL; over OAuth it carries the access token as ``oauth_token``."""
        oauth = self.rest.oauth
        if oauth is None:
            return self.settings.ws_url
        return f"{self.settings.ws_url}?oauth_token={oauth.access_token}"

    def _headers(self, session_id: str | None) -> dict[str, str]:
        # an explicit session override is the only session presented (not the REST jar's own)
        cookie = self.rest.cookie_header(session_id, with_jar=self.settings.session_id is None)
        headers = {"Cookie": cookie} if cookie else {}
        if self.rest.oauth is not None:
            headers["User-Agent"] = WS_USER_AGENT
        return headers

    def _redact(self, text: str) -> str:
        oauth, session = self.rest.oauth, self.settings.session_id
        text = oauth.redact(text) if oauth is not None else text
        return text.replace(session, "***") if session else text

    # ------------------------------------------------------------------------------ serving

    async def _serve(self, ws: WSTransport, inbox: Inbox, session_id: str | None) -> None:
        self._ws = ws
        self._close_reason = None
        self.session.connection_opened(self.clock_ns(), session_id)
        await self._flush()
        timers = asyncio.create_task(self._run_timers())
        try:
            pace_s, loop = self.settings.read_pace_s, asyncio.get_running_loop()
            while messages := await inbox.take():
                began = loop.time()
                await self._receive(messages)
                if pace_s and len(messages) < PACED_BELOW:  # a trickle: read again in a moment, all at once
                    await inbox.rest(began + pace_s)
        finally:
            timers.cancel()
            self._ws = None
            ws.disconnect()  # no-op unless this task is being cancelled
            await asyncio.gather(timers, return_exceptions=True)
            reason = self._redact(self._close_reason or await self._closed_how(ws))
            self.session.connection_lost(reason, self.clock_ns())
            self.session.frames_to_send()  # nothing may be written to a dead socket
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
            return close_text(close_code(handshake.recv.code), handshake.recv.reason)
        if handshake is not None and handshake.sent is not None:
            return close_text(close_code(handshake.sent.code), handshake.sent.reason)
        return close_text(1006, None)

    async def _receive(self, messages: list[bytes]) -> None:
        """Hand messages taken from the socket together to the session, ``max_batch_frames`` at a
        time (they count as received at the same instant); publish, write and act on what came of
        them, then yield, so the publisher and the timers keep pace."""
        session, limit = self.session, self.settings.max_batch_frames
        for start in range(0, len(messages), limit):
            if start:
                await asyncio.sleep(0)
            state, now_ns = session.state, self.clock_ns()
            session.receive_frames(messages[start : start + limit], now_ns)
            if session.state is not state:
                self._wake.set()
            await self._flush(now_ns)

    async def _run_timers(self) -> None:
        while True:
            deadline = self.session.next_deadline()
            delay_s = self.settings.max_timer_sleep_s
            if deadline is not None:
                delay_s = min(delay_s, max(0.0, (deadline - self.clock_ns()) / _NS_PER_S))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay_s)
            self.session.tick(self.clock_ns())
            await self._flush()

    async def _flush(self, received_ns: int | None = None) -> None:
        """Perform the session's actions, write its frames, publish its events."""
        session = self.session
        for action in session.actions_to_perform():
            self._perform(action)
        frames = session.frames_to_send()
        ws = self._ws
        if ws is not None and not ws.is_close_frame_sent:
            for frame in frames:  # written without waiting; a lost socket is reported by the serve loop
                ws.send(_TEXT, frame.encode())
        events = session.events_received()
        if events:
            await self.on_events(events, self.clock_ns() if received_ns is None else received_ns)

    # ------------------------------------------------------------------------------ actions

    def _perform(self, action: Action) -> None:
        if isinstance(action, Reconnect):
            self._close_reason = action.reason
            self._background(action, self._close(WSCloseCode.OK, "reconnect"))
        elif isinstance(action, TickleRest):
            self._background(action, self._rest_call(self.rest.tickle(), "tickle"))
        elif isinstance(action, PollAuthStatus):
            self._background(action, self._poll_auth())
        elif isinstance(action, Reauthenticate):
            self._background(action, self._rest_call(self._reauthenticate(), "reauthenticate"))
        elif isinstance(action, Reconcile):
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

    async def _reauthenticate(self) -> None:
        """The gateway's ``/iserver/reauthenticate``; over OAuth the brokerage session is reopened
        with ``ssodh/init`` (the Web API's way back in)."""
        if self.rest.oauth is not None:
            await self.rest.ssodh_init(compete=self.settings.compete)
        else:
            await self.rest.reauthenticate()

    async def _poll_auth(self) -> None:
        try:
            auth = await self.rest.auth_status()
        except GatewayError as exc:
            log.warning("gateway auth status poll failed: %s", exc)
            return
        self.session.auth_status_polled(auth.authenticated is True, auth.competing is True, self.clock_ns())
        await self._flush()

    async def _reconcile(self, action: Reconcile) -> None:
        """Fetch orders and trades for the session, which publishes what changed while blind."""
        try:
            orders = await self.rest.orders(force=True)
            trades = await self.rest.trades(self.settings.reconcile_trades_days)
        except GatewayError as exc:
            log.warning("gateway reconciliation failed: %s", exc)
            self.session.reconcile_failed(action.gap_id, str(exc), self.clock_ns())
        else:
            self.session.reconciled(action.gap_id, orders, trades, self.clock_ns())
        await self._flush()
