"""The simulator's Python API (``GatewaySimulator``) and its command line (``ibkr-bridge sim``)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import aiohttp

from bridge.sim.server import GatewaySimulator, session_from_cookies


async def test_in_process_simulator_streams_records_and_takes_faults(sim: GatewaySimulator) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(sim.ws_url, ssl=False) as ws:
        await ws.send_str("sor+{}")
        await ws.send_str("str+{\"realtimeUpdatesOnly\":true}")
        order = {"orders": [{"conid": 265598, "orderType": "MKT", "side": "BUY", "quantity": 2}]}
        url = f"{sim.base_url}/iserver/account/DU1234567/orders"
        async with http.post(url, json=order, ssl=False) as response:
            question = await response.json()
        async with http.post(f"{sim.base_url}/iserver/reply/{question[0]['id']}", json={"confirmed": True},
                             ssl=False) as response:
            order_id = int((await response.json())[0]["order_id"])
        executions: set[str] = set()
        filled = False
        async for msg in ws:
            frame = msg.json()
            if frame.get("topic") == "str":
                executions |= {e["execution_id"] for e in frame["args"] if "commission" in e}
            if frame.get("topic") == "sor":
                filled = filled or frame["args"][-1].get("status") == "Filled"
            if filled and len(executions) == 2:  # 2 lots fill in 2 parts
                break
        assert sim.record.orders[order_id]["status"] == "Filled"
        assert executions == {e["execution_id"] for e in sim.record.executions if e["order_id"] == order_id}
        await sim.apply_fault("drop")
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == 1000
    assert sim.stats()["faults"][0]["fault"] == "drop"


def test_session_cookies_are_read_in_every_spelling() -> None:
    assert session_from_cookies('api={"session":"abc"}') == "abc"
    assert session_from_cookies("other=1; api=abc") == "abc"
    assert session_from_cookies("x-sess-uuid=abc") == "abc"
    assert session_from_cookies("other=1") is None


def test_command_line_prints_its_urls_and_exits_zero_on_sigterm() -> None:
    cli = os.path.join(os.path.dirname(sys.executable), "ibkr-bridge")
    with subprocess.Popen([cli, "sim", "--port", "0", "--no-tls"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:  # fmt: skip
        assert proc.stdout is not None
        output = b""
        deadline = time.monotonic() + 15
        while b"websocket ws://" not in output and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.1)[0]:
                output += os.read(proc.stdout.fileno(), 4096)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert b"rest http://127.0.0.1:" in output and b"/v1/api/ws" in output
