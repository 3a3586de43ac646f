"""The REST calls clients make around the socket (reference §1.2, §2.4, §5.4, §6.1), plus the
simulator's own ``/sim/*`` control endpoints."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from bridge.sim import frames
from bridge.sim.faults import FaultError, apply_fault, recover
from bridge.sim.gateway import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
API = "/v1/api"
_OPEN_ISERVER = ("/iserver/auth/status", "/iserver/auth/ssodh/init", "/iserver/reauthenticate")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """REST pacing (HTTP 429) and the brokerage-session gate on ``/iserver`` (401, 503 in a reset)."""
    path = request.path
    if not path.startswith(API) or path == f"{API}/ws":
        return await handler(request)
    gateway = request.app[GATEWAY]
    gateway.rest_requests += 1
    limit = gateway.config.rest_rate_limit
    if limit is not None:
        second = int(time.monotonic())
        if second != gateway.rest_window[0]:
            gateway.rest_window = (second, 0)
        gateway.rest_window = (second, gateway.rest_window[1] + 1)
        if gateway.rest_window[1] > limit:
            gateway.rest_throttled += 1
            return _json({"error": "Too Many Requests", "statusCode": 429}, 429)
    sub = path[len(API):]
    if sub.startswith("/iserver") and not sub.startswith(_OPEN_ISERVER):
        if gateway.refuse_until and time.monotonic() < gateway.refuse_until:
            return _json({"error": "Service Unavailable", "statusCode": 503}, 503)
        if not gateway.brokerage_open:  # the Web API before ssodh/init
            return _json({"error": "Bad Request: no bridge", "statusCode": 400}, 400)
        if not gateway.authenticated:
            return _json({"error": "not authenticated", "statusCode": 401}, 401)
    return await handler(request)


def _auth_status(gateway: Gateway) -> dict[str, Any]:
    return {
        "authenticated": gateway.authenticated, "competing": gateway.competing, "connected": True,
        "message": "", "MAC": "98:F2:B3:23:BF:A0", "fail": "Competing session" if gateway.competing else "",
        "serverInfo": {"serverName": frames.SERVER_NAME, "serverVersion": frames.SERVER_VERSION},
    }


async def tickle(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    body = {
        "session": gateway.session_id, "ssoExpires": 460311, "collission": False, "userId": 123,
        "hmds": {"error": "no bridge"}, "iserver": {"authStatus": _auth_status(gateway)},
    }
    response = _json(body)
    response.set_cookie("x-sess-uuid", gateway.session_id, path=API, httponly=True)
    return response


async def auth_status(request: web.Request) -> web.Response:
    return _json(_auth_status(request.app[GATEWAY]))


async def ssodh_init(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    if gateway.ssodh_errors > 0:
        gateway.ssodh_errors -= 1
        return _json({"error": "Internal Server Error", "statusCode": 500}, 500)
    gateway.brokerage_open = True
    recover(gateway)
    return _json({"authenticated": True, "competing": False, "connected": True, "message": ""})


async def reauthenticate(request: web.Request) -> web.Response:
    recover(request.app[GATEWAY])
    return _json({"message": "triggered"})


async def logout(request: web.Request) -> web.Response:
    return _json({"status": True})


async def iserver_accounts(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    gateway.accounts_listed = True
    return _json(frames.accounts_payload(gateway.config.account, gateway.internal_session_id))


async def portfolio_accounts(request: web.Request) -> web.Response:
    account = request.app[GATEWAY].config.account
    return _json([{
        "id": account, "accountId": account, "accountVan": account, "accountTitle": "Simulated Account",
        "displayName": account, "accountAlias": None, "accountStatus": 1690000000000, "currency": "USD",
        "type": "DEMO", "tradingType": "STKNOPT", "businessType": "IB_PROSERVE", "ibEntity": "IBLLC-US",
        "faclient": False, "clearingStatus": "O", "covestor": False, "noClientTrading": False,
        "trackVirtualFXPortfolio": True, "parent": {"mmc": [], "accountId": "", "isMParent": False,
                                                    "isMChild": False, "isMultiplex": False},
        "desc": account,
    }])


async def live_orders(request: web.Request) -> web.Response:
    """The day's orders. ``filters`` also stops ``sor`` details until a ``force=true`` call (§2.4)."""
    gateway = request.app[GATEWAY]
    filters = [f for f in request.query.get("filters", "").split(",") if f]
    if request.query.get("force", "").lower() == "true":
        gateway.sor_suppressed = False
    elif filters:
        gateway.sor_suppressed = True
    return _json(gateway.orders.rest_orders(filters))


async def trades(request: web.Request) -> web.Response:
    days = request.query.get("days", "1")
    return _json(request.app[GATEWAY].orders.rest_trades(int(days) if days.isdigit() else 1))


async def place_order(request: web.Request) -> web.Response:
    status, data = request.app[GATEWAY].orders.place(request.match_info["acct"], await _body(request))
    return _json(data, status)


async def reply(request: web.Request) -> web.Response:
    body = await _body(request)
    status, data = request.app[GATEWAY].orders.reply(request.match_info["id"], bool(body.get("confirmed")))
    return _json(data, status)


async def cancel_order(request: web.Request) -> web.Response:
    order_id = request.match_info["id"]
    if not order_id.isdigit():
        return _json({"error": f"OrderID {order_id} is not valid", "statusCode": 400}, 400)
    status, data = request.app[GATEWAY].orders.cancel(request.match_info["acct"], int(order_id))
    return _json(data, status)


async def post_fault(request: web.Request) -> web.Response:
    body = await _body(request)
    name = str(body.pop("fault", ""))
    try:
        result = await apply_fault(request.app[GATEWAY], name, body)
    except FaultError as exc:
        return _json({"error": str(exc)}, 400)
    return _json({"fault": name, "result": result})


async def get_stats(request: web.Request) -> web.Response:
    return _json(request.app[GATEWAY].stats())


async def get_record(request: web.Request) -> web.Response:
    return _json(request.app[GATEWAY].orders.record.as_json())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(f"{API}/tickle", tickle)
    r.add_get(f"{API}/tickle", tickle)
    r.add_route("*", f"{API}/iserver/auth/status", auth_status)
    r.add_post(f"{API}/iserver/auth/ssodh/init", ssodh_init)
    r.add_post(f"{API}/iserver/reauthenticate", reauthenticate)
    r.add_get(f"{API}/iserver/reauthenticate", reauthenticate)
    r.add_post(f"{API}/logout", logout)
    r.add_get(f"{API}/iserver/accounts", iserver_accounts)
    r.add_get(f"{API}/portfolio/accounts", portfolio_accounts)
    r.add_get(f"{API}/iserver/account/orders", live_orders)
    r.add_get(f"{API}/iserver/account/trades", trades)
    r.add_get(f"{API}/iserver/account/trades/", trades)
    r.add_post(f"{API}/iserver/account/{{acct}}/orders", place_order)
    r.add_post(f"{API}/iserver/reply/{{id}}", reply)
    r.add_delete(f"{API}/iserver/account/{{acct}}/order/{{id}}", cancel_order)
    r.add_post("/sim/faults", post_fault)
    r.add_get("/sim/stats", get_stats)
    r.add_get("/sim/record", get_record)
