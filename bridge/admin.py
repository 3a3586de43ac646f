"""Admin HTTP (aiohttp): /metrics, /livez, /readyz, /status, /subscriptions.

Bound to 127.0.0.1 unless configured otherwise. When a bearer token is
configured, mutations (POST/DELETE /subscriptions) require it; reads stay open
so probes and scrapers need no secret. Listening on any other address without a
token, the API is read-only: mutations answer 403 (see :class:`AdminLimits`).

Every connection must deliver its request headers within ``header_timeout_s``
(a connection that sends nothing, or trickles, is closed) and its body within
``body_timeout_s``; past ``max_connections`` open connections a new one is
answered 503 and closed at once, so the admin port can never use up the
process's file descriptors. Every mutation body is validated per subscription
type: a 400 names the field (``{"error": ..., "field": ...}``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from bridge.specs import SpecError

log = logging.getLogger(__name__)

JSON = "application/json"


class AdminBackend(Protocol):
    """What the admin endpoints read and steer; implemented by the composition root."""

    def readiness(self) -> dict[str, bool]: ...

    def status(self) -> dict[str, Any]: ...

    def subscriptions(self) -> list[dict[str, Any]]: ...

    async def subscribe(self, spec: dict[str, Any]) -> dict[str, Any]: ...

    async def unsubscribe(self, spec: dict[str, Any]) -> dict[str, Any]: ...


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=str), status=status, content_type=JSON)


@dataclass(frozen=True, slots=True)
class AdminLimits:
    header_timeout_s: float = 10.0  # request line and headers, from the connection or the last response
    body_timeout_s: float = 10.0
    max_connections: int = 64
    max_body_bytes: int = 65_536
    read_only: bool = False  # mutations refused (403): a non-loopback listener without a token


def build_admin_app(
    backend: AdminBackend,
    render_metrics: Callable[[], bytes],
    token: str | None = None,
    limits: AdminLimits | None = None,
) -> web.Application:
    limits = limits or AdminLimits()
    app = web.Application(client_max_size=limits.max_body_bytes)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=render_metrics(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def livez(_: web.Request) -> web.Response:
        return _json({"live": True})

    async def readyz(_: web.Request) -> web.Response:
        checks = backend.readiness()
        ready = all(checks.values())
        return _json({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def status(_: web.Request) -> web.Response:
        return _json(backend.status())

    async def list_subscriptions(_: web.Request) -> web.Response:
        return _json({"subscriptions": backend.subscriptions()})

    def mutation(action: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return await _mutate(request, action, token, limits)

        return handler

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/subscriptions", list_subscriptions)
    app.router.add_post("/subscriptions", mutation(backend.subscribe))
    app.router.add_delete("/subscriptions", mutation(backend.unsubscribe))
    return app


async def _mutate(
    request: web.Request,
    action: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    token: str | None,
    limits: AdminLimits,
) -> web.Response:
    """A POST/DELETE /subscriptions: read-only and token checks, the body read within its
    timeout and size, then validated (a 400 names the field) and applied."""
    if limits.read_only:
        return _json({"error": READ_ONLY}, 403)
    if token is not None and not _authorized(request, token):
        return _json({"error": "missing or wrong bearer token"}, 401)
    try:
        body = await asyncio.wait_for(request.read(), limits.body_timeout_s)
    except TimeoutError:
        return _json({"error": f"request body not received within {limits.body_timeout_s:g} s"}, 408)
    except web.HTTPRequestEntityTooLarge:
        return _json({"error": f"request body larger than {limits.max_body_bytes} bytes"}, 413)
    try:
        spec = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _json({"error": f"the body is not JSON: {exc}", "field": None}, 400)
    if not isinstance(spec, dict):
        return _json({"error": "the body must be a JSON object", "field": None}, 400)
    try:
        result = await action(spec)
    except SpecError as exc:
        return _json({"error": str(exc), "field": exc.field}, 400)
    except ValueError as exc:
        return _json({"error": str(exc), "field": None}, 400)
    log.info("subscriptions changed over admin API: %s", result)
    return _json(result)


READ_ONLY = ("the admin API is read-only: it listens beyond loopback without admin.token; set "
             "BRIDGE_ADMIN__TOKEN or admin.token_file to change subscriptions over HTTP")  # fmt: skip


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Busy(asyncio.Protocol):
    """A connection past the cap: answered 503 and closed, never read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class _CappedSite(web.TCPSite):
    """``TCPSite`` whose listener hands a connection to aiohttp only below ``max_connections``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, max_connections: int) -> None:
        super().__init__(runner, host, port, backlog=128)
        self._max_connections = max_connections
        self.refused_connections = 0

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._max_connections:
            self.refused_connections += 1
            return _Busy()
        return server()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self._host, self._port, backlog=128)


async def start_admin(
    app: web.Application, host: str, port: int, limits: AdminLimits | None = None
) -> tuple[web.AppRunner, int]:
    """Serve the admin app; returns the runner and the bound port (``port=0`` picks a free one)."""
    limits = limits or AdminLimits()
    # aiohttp's keep-alive timer runs from the connection's start and after each response, and
    # closes a connection still waiting for a complete request: the header read timeout.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.header_timeout_s)
    await runner.setup()
    site = _CappedSite(runner, host, port, limits.max_connections)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    addresses = runner.addresses
    bound = addresses[0][1] if addresses else port
    mode = " (read-only: no admin.token)" if limits.read_only else ""
    log.info("admin HTTP listening on http://%s:%d%s", host, bound, mode)
    if limits.read_only:
        log.warning("%s", READ_ONLY)
    return runner, int(bound)
