"""The simulated Client Portal Gateway: REST and websocket on one port, self-signed TLS.

Python API (tests, demo, benchmarks)::

    from bridge.sim.server import GatewaySimulator
    from bridge.sim.config import SimConfig

    async with GatewaySimulator(SimConfig(port=0, heartbeat_s=0.5, order_step_s=0.01)) as sim:
        sim.base_url   # "https://127.0.0.1:<port>/v1/api"
        sim.ws_url     # "wss://127.0.0.1:<port>/v1/api/ws"
        sim.port
        sim.record     # SimRecord: orders, order_updates (every sor element), executions
        await sim.apply_fault("drop")          # any fault of bridge.sim.faults, keyword parameters
        sim.stats()    # connections, frames per topic, subscriptions per socket, faults applied

With ``SimConfig(oauth_dir=DIR)`` it serves IBKR's Web API over OAuth 1.0a instead
(``bridge/sim/oauth.py``): ``sim.oauth_file`` and ``sim.cert_file`` are what a client needs.

Over HTTP on the same port: ``POST /sim/faults`` (``{"fault": NAME, ...}``), ``GET /sim/stats``,
``GET /sim/record``. REST endpoints: reference §1.2 and ``bridge/sim/rest.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web

from bridge.sim import rest
from bridge.sim.config import SimConfig
from bridge.sim.connection import SimConnection
from bridge.sim.faults import apply_fault, load_scenario, run_scenario
from bridge.sim.gateway import Gateway
from bridge.sim.oauth import SimOAuth, ensure_consumer
from bridge.sim.oauth_http import OAUTH, oauth_gate, upgrade_refusal
from bridge.sim.orders import SimRecord
from bridge.sim.tls import self_signed_context

log = logging.getLogger(__name__)

_conn_ids = itertools.count(1)


def session_from_cookies(header: str) -> str | None:
    """The tickle session carried by ``x-sess-uuid=<id>``, ``api=<id>`` or ``api={"session":"<id>"}``."""
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        value = value.strip()
        if name == "x-sess-uuid" and value:
            return value
        if name == "api" and value:
            if value.startswith("{"):
                found = value.split('"session"', 1)[-1].split('"')
                return found[1] if len(found) > 2 else None
            return value
    return None


async def ws_handler(request: web.Request) -> web.StreamResponse:
    gateway = request.app[rest.GATEWAY]
    gateway.upgrade_agents[request.headers.get("User-Agent", "")] += 1
    if gateway.oauth is not None:
        why = upgrade_refusal(request, gateway.oauth, gateway.session_id)
        if why is not None:
            gateway.refused_upgrades += 1
            return web.json_response({"error": f"Unauthorized: {why}", "statusCode": 401}, status=401)
    refusal = gateway_upgrade_refusal(gateway)
    if refusal is not None:
        gateway.refused_upgrades += 1
        reason = "Unauthorized" if refusal == 401 else "Service Unavailable"
        return web.json_response({"error": reason, "statusCode": refusal}, status=refusal)
    ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20, timeout=2.0)
    await ws.prepare(request)
    conn = SimConnection(next(_conn_ids), ws, request, gateway)
    gateway.add(conn)
    try:
        presented = session_from_cookies(request.headers.get("Cookie", ""))
        gateway.sessions_presented.append(("cookie", presented))
        cookie_ok = presented == gateway.session_id
        if cookie_ok or not gateway.config.require_session:
            conn.open_session()
        else:
            conn.write({"message": "waiting for session"}, "message")
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                _handle(conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                _handle(conn, msg.data.decode("utf-8", errors="replace"))
    finally:
        gateway.remove(conn)
    return ws


def _handle(conn: SimConnection, text: str) -> None:
    try:
        conn.handle_text(text)
    except Exception:  # one bad message must not kill the socket
        log.exception("simulator failed to handle %r", text[:200])


def gateway_upgrade_refusal(gateway: Gateway) -> int | None:
    if gateway.refuse_until and time.monotonic() < gateway.refuse_until:
        return 503
    if gateway.refuse_count > 0:
        gateway.refuse_count -= 1
        return gateway.refuse_status
    return None


class GatewaySimulator:
    """Runs the simulator inside the current event loop (``async with``) until stopped."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.gateway = Gateway(self.config)
        self._runner: web.AppRunner | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.cert_path: Path | None = None  # with TLS: the certificate, a verifying client's CA file
        self.port = self.config.port

    @property
    def scheme(self) -> str:
        return "https" if self.config.tls else "http"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1/api"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.config.tls else 'ws'}://{self.config.host}:{self.port}/v1/api/ws"

    @property
    def record(self) -> SimRecord:
        return self.gateway.orders.record

    def stats(self) -> dict[str, Any]:
        return self.gateway.stats()

    async def apply_fault(self, name: str, **params: Any) -> dict[str, Any]:
        return await apply_fault(self.gateway, name, params)

    @property
    def oauth_file(self) -> Path | None:
        """OAuth mode: the key set for clients (``oauth.json``)."""
        return self.config.oauth_dir / "oauth.json" if self.config.oauth_dir else None

    @property
    def cert_file(self) -> Path | None:
        """OAuth mode: the TLS certificate (loopback, self-signed) for clients to trust."""
        directory = self.config.oauth_dir
        return directory / "tls" / "cert.pem" if directory is not None and self.config.tls else None

    def build_app(self) -> web.Application:
        oauth = self.gateway.oauth
        middlewares = [oauth_gate, rest.gate] if oauth is not None else [rest.gate]
        app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
        app[rest.GATEWAY] = self.gateway
        if oauth is not None:
            app[OAUTH] = oauth
        app.router.add_get("/v1/api/ws", ws_handler)
        rest.add_routes(app)
        return app

    async def start(self) -> None:
        ssl_context: ssl.SSLContext | None = None
        oauth_dir = self.config.oauth_dir
        if oauth_dir is not None:
            self.gateway.oauth = SimOAuth(ensure_consumer(oauth_dir), self.config.lst_ttl_s)
        if self.config.tls:
            directory = self.config.tls_dir
            if directory is None and oauth_dir is not None:
                directory = oauth_dir / "tls"
            if directory is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="ibkr-sim-")
                directory = Path(self._tmp.name)
            directory.mkdir(parents=True, exist_ok=True)
            ssl_context = self_signed_context(directory, self.config.host, self.config.tls_names)
            self.cert_path = directory / "cert.pem"
        scenario = load_scenario(self.config.scenario) if self.config.scenario else None
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=ssl_context,
                           backlog=256)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.gateway.start()
        if scenario:
            self.gateway.spawn(run_scenario(self.gateway, scenario))
        log.info("gateway simulator listening on %s", self.origin)

    async def stop(self) -> None:
        await self.gateway.close()
        for conn in list(self.gateway.connections.values()):
            conn.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> GatewaySimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop())
