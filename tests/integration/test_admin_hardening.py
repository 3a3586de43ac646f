"""The admin port under attack: half-open and trickling connections are closed, connections are
capped, mutations need a token beyond loopback, and every body is validated with a 400 naming
the field. A real aiohttp server, real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.admin import AdminLimits, build_admin_app, start_admin
from bridge.config import AdminSettings, load_settings
from bridge.specs import subscription_from_spec, validate_unsubscribe

SETTINGS = load_settings(None, {})


class Backend:
    def readiness(self) -> dict[str, bool]:
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {}

    def subscriptions(self) -> list[dict[str, Any]]:
        return []

    async def subscribe(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"subscribed": subscription_from_spec(spec, SETTINGS, "DU1").key}

    async def unsubscribe(self, spec: dict[str, Any]) -> dict[str, Any]:
        validate_unsubscribe(spec)
        return {"unsubscribed": spec["key"]}


async def serve(limits: AdminLimits, token: str | None = None) -> tuple[web.AppRunner, int]:
    return await start_admin(build_admin_app(Backend(), lambda: b"", token, limits), "127.0.0.1", 0, limits)


@pytest.fixture
async def admin() -> AsyncIterator[int]:
    runner, port = await serve(AdminLimits(header_timeout_s=0.5, body_timeout_s=0.5, max_connections=8))
    try:
        yield port
    finally:
        await runner.cleanup()


async def closed_by_server(reader: asyncio.StreamReader, within_s: float = 15.0) -> bytes:
    """What the server sent before closing; raises TimeoutError if it keeps the connection open."""
    return await asyncio.wait_for(reader.read(), within_s)


async def test_a_connection_that_never_sends_a_request_is_closed(admin: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", admin)
    assert await closed_by_server(reader) == b""
    writer.close()


async def test_request_headers_trickled_byte_by_byte_are_cut_off(admin: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", admin)
    request = b"GET /livez HTTP/1.1\r\nHost: bridge\r\nX-Slow: " + b"a" * 200
    closed = asyncio.create_task(closed_by_server(reader))
    for byte in request:
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
    assert closed.done() and b"200" not in await closed
    writer.close()


async def test_a_body_never_sent_is_answered_408(admin: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", admin)
    writer.write(b"POST /subscriptions HTTP/1.1\r\nHost: bridge\r\nContent-Length: 100\r\n\r\n{")
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_connections_past_the_cap_are_answered_503_and_the_port_keeps_serving(admin: int) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", admin) for _ in range(8)]
    reader, writer = await asyncio.open_connection("127.0.0.1", admin)
    assert (await closed_by_server(reader, 5)).startswith(b"HTTP/1.1 503")
    writer.close()
    for _, w in idle:
        w.close()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin}/livez") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "market_data", "conid": "265598", "fields": 5}, "fields"),
        ({"type": "market_data", "conid": "265598", "fields": [{}]}, "fields"),
        ({"type": "market_data"}, "conid"),
        ({"type": "market_data", "conid": ["265598"]}, "conid"),
        ({"type": "market_data", "conid": "265598", "feilds": ["31"]}, "feilds"),
        ({"type": "quotes", "conid": "265598"}, "type"),
        ({"conid": "265598"}, "type"),
        ({"type": "account_summary", "account": 7}, "account"),
        ({"type": "bars", "conid": "265598", "stream": "yes"}, "stream"),
        ({"type": "book", "conid": "265598", "exchange": 1}, "exchange"),
        ({"type": "orders", "filters": ["x"]}, "filters"),
    ],
)
async def test_every_subscribe_body_is_validated_with_a_400_naming_the_field(
    admin: int, body: dict[str, Any], field: str
) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{admin}/subscriptions", json=body) as resp:
        answer = await resp.json()
    assert resp.status == 400 and answer["field"] == field and answer["error"].startswith(f"{field}:")


@pytest.mark.parametrize(("body", "field"), [({}, "key"), ({"key": 5}, "key"), ({"key": "md:1", "x": 1}, "x")])
async def test_every_unsubscribe_body_is_validated_with_a_400_naming_the_field(
    admin: int, body: dict[str, Any], field: str
) -> None:
    async with aiohttp.ClientSession() as http, http.delete(f"http://127.0.0.1:{admin}/subscriptions",
                                                             json=body) as resp:  # fmt: skip
        answer = await resp.json()
    assert resp.status == 400 and answer["field"] == field


async def test_a_valid_body_still_subscribes(admin: int) -> None:
    body = {"type": "market_data", "conid": 265598, "fields": ["31", 84]}
    async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{admin}/subscriptions", json=body) as resp:
        assert resp.status == 200 and (await resp.json()) == {"subscribed": "md:265598"}


def test_an_admin_listener_beyond_loopback_without_a_token_is_read_only() -> None:
    assert AdminSettings(host="0.0.0.0").read_only
    assert AdminSettings(host="10.1.2.3").read_only
    assert not AdminSettings(host="127.0.0.1").read_only
    assert not AdminSettings(host="::1").read_only
    assert not AdminSettings(host="0.0.0.0", token="s3cret").read_only


async def test_a_read_only_admin_refuses_mutations_with_403_and_keeps_serving_reads() -> None:
    runner, port = await serve(AdminLimits(read_only=True))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/subscriptions", json={"type": "orders"}) as resp:
                assert resp.status == 403 and "BRIDGE_ADMIN__TOKEN" in (await resp.json())["error"]
            async with http.get(f"http://127.0.0.1:{port}/subscriptions") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_with_a_token_mutations_need_it() -> None:
    runner, port = await serve(AdminLimits(), token="s3cret")
    try:
        url = f"http://127.0.0.1:{port}/subscriptions"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={"type": "orders"}) as resp:
                assert resp.status == 401
            async with http.post(url, json={"type": "orders"}, headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
