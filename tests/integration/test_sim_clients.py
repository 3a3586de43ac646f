"""Code written for the real gateway works against the simulator unchanged: the vendor tutorial's
websocket-client script and the ibind library."""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from typing import Any

import pytest
import websocket

from tests.fixtures.sim import SimProcess

pytestmark = pytest.mark.filterwarnings("ignore:Unverified HTTPS request")


class TutorialClient:
    """The vendor tutorial's logic: WebSocketApp, CERT_NONE, subscribe right after opening."""

    def __init__(self, url: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.app = websocket.WebSocketApp(url, on_open=self.on_open, on_message=self.on_message)
        self.thread = threading.Thread(
            target=self.app.run_forever, kwargs={"sslopt": {"cert_reqs": ssl.CERT_NONE}}, daemon=True
        )

    def on_open(self, ws: websocket.WebSocketApp) -> None:
        for conid in ("265598", "8314"):
            ws.send("smd+" + conid + '+{"fields":["31","84","86"]}')
        ws.send("sor+{}")

    def on_message(self, ws: websocket.WebSocketApp, message: str) -> None:
        with self.lock:
            self.messages.append(json.loads(message))

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                found = [m for m in self.messages if predicate(m)]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"nothing matched in {timeout_s}s; last frames {self.messages[-5:]}")


def test_tutorial_script_receives_quotes_for_both_conids(sim_process: SimProcess) -> None:
    client = TutorialClient(sim_process.ws_url)
    client.thread.start()
    try:
        for conid in (265598, 8314):
            first = client.wait_for(lambda m, c=conid: m.get("topic") == f"smd+{c}" and "31" in m)[0]
            assert first["conid"] == conid and first["conidEx"] == str(conid)
            assert all(isinstance(first[f], str) for f in ("31", "84", "86"))
            assert first["server_id"] == first["6119"]
    finally:
        client.app.close()


def test_tutorial_script_sees_its_order_on_sor_after_placing_it_over_rest(sim_process: SimProcess) -> None:
    client = TutorialClient(sim_process.ws_url)
    client.thread.start()
    try:
        client.wait_for(lambda m: m.get("topic", "").startswith("smd+"))
        order_id = sim_process.place_order(265598, "BUY", 3)
        updates = client.wait_for(
            lambda m: m.get("topic") == "sor" and any(e.get("status") == "Filled" for e in m["args"])
        )
        assert updates[0]["args"][-1]["orderId"] == order_id
        statuses = [e.get("status") for m in client.messages if m.get("topic") == "sor" for e in m["args"]]
        assert [s for s in statuses if s] == ["Inactive", "PendingSubmit", "PreSubmitted", "Submitted", "Filled"]
    finally:
        client.app.close()


def test_ibind_receives_market_data_through_its_queue(sim_process: SimProcess) -> None:
    from ibind import IbkrClient, IbkrWsClient, QueueSink
    from ibind.events import MarketData
    from ibind.ibkr_ws.ibkr_subscriptions import MarketDataSubscription

    logging.getLogger("ibind").setLevel(logging.WARNING)
    rest = IbkrClient(url=f"{sim_process.base_url}/", account_id="DU1234567", cacert=False,
                      auto_register_shutdown=False)
    assert rest.check_health()
    assert rest.portfolio_accounts().data[0]["id"] == "DU1234567"
    sink = QueueSink()
    queue = sink.new_queue_accessor(MarketData)
    ws_client = IbkrWsClient(url=sim_process.ws_url, ibkr_client=rest, account_id="DU1234567", cacert=False,
                             sink=sink)
    assert ws_client.start()
    try:
        handle = ws_client.subscribe(MarketDataSubscription(conid="265598", fields=["31", "84", "86"]))
        assert not ws_client.wait_all(handle, timeout_each=10)
        event = queue.get(block=True, timeout=10)
        assert event.conid == "265598"
        assert {"last_price", "bid_price", "ask_price"} & set(event.data)
    finally:
        ws_client.shutdown()
        rest.close()
