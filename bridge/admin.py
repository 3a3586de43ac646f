"""Admin HTTP (aiohttp): /metrics, /livez, /readyz, /status, /subscriptions.

Bound to 127.0.0.1 unless configured otherwise. When a bearer token is
configured, mutations (POST/DELETE /subscriptions) require it; reads stay open
so probes and scrapers need no secret.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

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


def build_admin_app(
    backend: AdminBackend, render_metrics: Callable[[], bytes], token: str | None = None
) -> web.Application:
    app = web.Application()

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
            if token is not None and not _authorized(request, token):
                return _json({"error": "missing or wrong bearer token"}, 401)
            try:
                spec = orjson.loads(await request.read())
                if not isinstance(spec, dict):
                    raise ValueError("the body must be a JSON object")
                result = await action(spec)
            except (ValueError, orjson.JSONDecodeError) as exc:
                return _json({"error": str(exc)}, 400)
            log.info("subscriptions changed over admin API: %s", result)
            return _json(result)

        return handler

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/subscriptions", list_subscriptions)
    app.router.add_post("/subscriptions", mutation(backend.subscribe))
    app.router.add_delete("/subscriptions", mutation(backend.unsubscribe))
    return app


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


async def start_admin(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the admin app; returns the runner and the bound port (``port=0`` picks a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    addresses = runner.addresses
    bound = addresses[0][1] if addresses else port
    log.info("admin HTTP listening on http://%s:%d", host, bound)
    return runner, int(bound)
