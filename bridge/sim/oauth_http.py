"""HTTP glue of the simulator's OAuth mode: the signature gate in front of every ``/v1/api`` call,
``POST /v1/api/oauth/live_session_token``, and the websocket's ``oauth_token`` check.

Nothing reaches the gateway's own handlers unsigned; a refusal is a 401 in IBKR's shape
(``{"error": "id: 39687, error: invalid consumer", "statusCode": 401}``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from bridge.sim.oauth import OAuthRefused, SignedRequest, SimOAuth

log = logging.getLogger(__name__)

OAUTH = web.AppKey("oauth", SimOAuth)
API = "/v1/api"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(oauth: SimOAuth, reason: str) -> web.Response:
    oauth.refused[reason] += 1
    body = {"error": f"id: {secrets.randbelow(900_000) + 100_000}, error: {reason}", "statusCode": 401}
    return web.Response(body=orjson.dumps(body), status=401, content_type="application/json")


def signed_request(request: web.Request) -> SignedRequest:
    scheme = "https" if request.secure else "http"
    hosts = {request.host}
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if sockname:
        hosts.update({f"{sockname[0]}:{sockname[1]}", f"localhost:{sockname[1]}"})
    default_port = ":443" if scheme == "https" else ":80"
    urls = tuple(sorted({f"{scheme}://{h.removesuffix(default_port)}{request.path}" for h in hosts}))
    return SignedRequest(request.method, urls, dict(request.query), request.headers.get("Authorization", ""))


@web.middleware
async def oauth_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not path.startswith(API) or path == f"{API}/ws":
        return await handler(request)
    oauth = request.app[OAUTH]
    now_ms = int(time.time() * 1000)
    try:
        if oauth.is_lst_request(path):
            if request.method != "POST":
                raise OAuthRefused("the live session token is requested with POST")
            answer = oauth.live_session_token(signed_request(request), now_ms, secrets.randbits(256) | 1)
            log.info("live session token issued (%d so far)", oauth.issued)
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        oauth.verify(signed_request(request), now_ms)
    except OAuthRefused as exc:
        log.info("OAuth refused %s %s: %s", request.method, path, exc.message)
        return _refusal(oauth, exc.message)
    return await handler(request)


def upgrade_refusal(request: web.Request, oauth: SimOAuth, session_id: str) -> str | None:
    """Why the websocket upgrade is refused (``oauth_token`` query, raw ``api`` cookie), or None."""
    if request.query.get("oauth_token") != oauth.consumer.access_token:
        return "invalid or missing oauth_token"
    cookie = request.cookies.get("api", "")
    if cookie != session_id:
        return "invalid or missing api cookie (the /tickle session id)"
    return None
