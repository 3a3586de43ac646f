"""``ibkr-bridge run`` in OAuth mode (the Web API without a gateway) against the simulator's OAuth
mode, publishing to a real Kafka-protocol broker and a real Redis; orders are placed by ibind's
OAuth client. Also: the token is regenerated after the server expires it, and no secret of the key
set, no live session token and no session id appears in any log line, metric, event or /status."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from bridge.sim.config import SimConfig
from bridge.sim.server import GatewaySimulator
from tests.fault.harness import EXECUTIONS, MARKET_DATA, ORDERS, BridgeProcess, TopicReader, bridge_config
from tests.fixtures.brokers import ServerProcess
from tests.fixtures.sim import FAST_CONFIG, SimProcess

ACCOUNT = "DU1234567"
CONIDS = (265598, 8314)


def oauth_bridge_config(origin: str, oauth_file: str, cert_file: str, sink: dict[str, Any],
                        spool_dir: Path) -> dict[str, Any]:  # fmt: skip
    """The fault harness's settings with the gateway in OAuth mode: no insecure_tls, the
    simulator's certificate as the CA, key material only from the key set file."""
    sim_stub = SimProcess.__new__(SimProcess)
    sim_stub.origin = origin
    config = bridge_config(sim_stub, "unused:0", spool_dir, CONIDS, session={"tickle_interval_s": 0.5})
    config["gateway"] = {"mode": "oauth", "url": origin, "oauth_file": oauth_file, "ca_file": cert_file}
    config["sink"] = sink
    return config


def kafka_sink(bootstrap: str) -> dict[str, Any]:
    return {"url": f"kafka://{bootstrap}",
            "kafka": {"enable_idempotence": False, "create_topics": True, "topic_partitions": 3,
                      "request_timeout_ms": 5_000}}  # fmt: skip


def ibind_client(base_url: str, oauth_file: str) -> Any:
    from ibind import IbkrClient
    from ibind.oauth.oauth1a import OAuth1aConfig

    config = OAuth1aConfig(**json.loads(Path(oauth_file).read_text()), oauth_rest_url=f"{base_url}/",
                           maintain_oauth=False, shutdown_oauth=False)  # fmt: skip
    return IbkrClient(use_oauth=True, oauth_config=config, account_id=ACCOUNT, auto_register_shutdown=False)


def place_market_order(client: Any, conid: int, quantity: float = 3) -> int:
    from ibind import OrderRequest

    request = OrderRequest(conid=conid, side="BUY", quantity=quantity, order_type="MKT", acct_id=ACCOUNT)
    data = client.place_order(request, answers={}).data  # ibind unwraps a one-order answer
    return int((data[0] if isinstance(data, list) else data)["order_id"])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def oauth_sim(sim_process_factory: Callable[..., SimProcess], tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> SimProcess:  # fmt: skip
    sim = sim_process_factory("--oauth", str(tmp_path / "keys"), "--no-order-confirmation")
    assert sim.cert_file is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.cert_file)  # ibind verifies TLS in OAuth mode
    return sim


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], BridgeProcess]]:
    started: list[BridgeProcess] = []

    def start(config: dict[str, Any]) -> BridgeProcess:
        process = BridgeProcess(config, tmp_path / f"bridge{len(started)}")
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.close()


def _filled(records: list[Any], order_ids: set[int]) -> bool:
    filled = {int(r.key) for r in records if r.data.get("status") == "Filled"}
    return order_ids <= filled


def test_oauth_mode_publishes_quotes_orders_and_executions_to_kafka_and_recovers_an_expired_token(
    oauth_sim: SimProcess, own_kafka_broker: ServerProcess,
    bridge_factory: Callable[[dict[str, Any]], BridgeProcess], tmp_path: Path,
) -> None:  # fmt: skip
    assert oauth_sim.oauth_file is not None and oauth_sim.cert_file is not None
    config = oauth_bridge_config(oauth_sim.origin, oauth_sim.oauth_file, oauth_sim.cert_file,
                                 kafka_sink(own_kafka_broker.address), tmp_path / "spool")  # fmt: skip
    bridge = bridge_factory(config)
    reader = TopicReader(own_kafka_broker.address)
    reader.start()
    client = ibind_client(oauth_sim.base_url, oauth_sim.oauth_file)
    try:
        assert reader.wait_for(lambda r: {int(q.key) for q in r.records(MARKET_DATA)} >= set(CONIDS), 30), \
            bridge.log()[-3000:]
        first = {place_market_order(client, 265598), place_market_order(client, 8314, 2)}
        assert reader.wait_for(lambda r: _filled(r.records(ORDERS), first), 30), bridge.log()[-3000:]

        issued_before = oauth_sim.stats()["oauth"]["lsts_issued"]
        oauth_sim.apply_fault("lst_expire")  # the bridge's next tickle is refused: 401, new token
        assert reader.wait_for(lambda _r: oauth_sim.stats()["oauth"]["lsts_issued"] > issued_before, 20)
        client.oauth_init(maintain_oauth=False, init_brokerage_session=False)
        second = {place_market_order(client, 265598, 1)}
        assert reader.wait_for(lambda r: _filled(r.records(ORDERS), first | second), 30), bridge.log()[-3000:]
        assert reader.wait_for(lambda r: {int(e.key) for e in r.records(EXECUTIONS)} >= first | second, 30)
    finally:
        client.close()
        reader.close()
    stats = oauth_sim.stats()["oauth"]
    assert stats["refused"].get("live session token expired", 0) >= 1
    assert "requesting a new live session token" in bridge.log()
    assert http_get(bridge.admin_port, "/readyz")[0] == 200
    assert not reader.lifecycle("disconnected")  # the socket never noticed the token change
    assert bridge.stop() == 0


def test_oauth_mode_publishes_quotes_orders_and_executions_to_redis_streams(
    oauth_sim: SimProcess, own_redis_server: ServerProcess,
    bridge_factory: Callable[[dict[str, Any]], BridgeProcess], tmp_path: Path,
) -> None:  # fmt: skip
    assert oauth_sim.oauth_file is not None and oauth_sim.cert_file is not None
    config = oauth_bridge_config(oauth_sim.origin, oauth_sim.oauth_file, oauth_sim.cert_file,
                                 {"url": own_redis_server.address}, tmp_path / "spool")  # fmt: skip
    bridge = bridge_factory(config)
    client = ibind_client(oauth_sim.base_url, oauth_sim.oauth_file)
    store = redis.Redis.from_url(own_redis_server.address)
    try:
        orders = {place_market_order(client, 265598), place_market_order(client, 8314)}

        def published() -> bool:
            quotes = {orjson.loads(f[b"data"])["conid"] for _, f in store.xrange(MARKET_DATA)}
            filled = {orjson.loads(f[b"data"])["order_id"] for _, f in store.xrange(ORDERS)
                      if orjson.loads(f[b"data"]).get("status") == "Filled"}  # fmt: skip
            executed = {orjson.loads(f[b"data"])["order_id"] for _, f in store.xrange(EXECUTIONS)}
            return quotes >= set(CONIDS) and filled >= orders and executed >= orders

        assert _eventually(published, 40), bridge.log()[-3000:]
    finally:
        client.close()
        store.close()
    assert bridge.stop() == 0


def _eventually(check: Callable[[], bool], timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# --------------------------------------------------------------------------- secrets


class ThreadedSimulator:
    """The simulator in a thread of this process, so the test can read the tokens it issued."""

    def __init__(self, config: SimConfig) -> None:
        self.sim = GatewaySimulator(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="simulator", daemon=True)

    def __enter__(self) -> ThreadedSimulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, fault: str) -> Any:
        return asyncio.run_coroutine_threadsafe(self.sim.apply_fault(fault), self.loop).result(10)


def secret_material(sim: GatewaySimulator) -> dict[str, str]:
    """Every secret string of the run: key set values, the access-token secret in clear (hex),
    each private key's PEM lines, every live session token issued, the session id."""
    assert sim.config.oauth_dir is not None and sim.gateway.oauth is not None
    directory = sim.config.oauth_dir
    keys = json.loads((directory / "oauth.json").read_text())
    found = {name: keys[name] for name in ("consumer_key", "access_token", "access_token_secret")}
    found["secret_hex"] = json.loads((directory / "sim-consumer.json").read_text())["secret_hex"]
    for kind in ("signature", "encryption"):
        lines = [line for line in Path(keys[f"{kind}_key_fp"]).read_text().splitlines() if "-----" not in line]
        found.update({f"{kind}_pem_{i}": line for i, line in enumerate(lines) if len(line) >= 32})
    for i, token in enumerate(sim.gateway.oauth.issued_tokens):
        found[f"lst_{i}"] = token
        found[f"lst_{i}_hex"] = base64.b64decode(token).hex()
    found["session_id"] = sim.gateway.session_id
    return found


def test_no_secret_appears_in_any_log_line_metric_event_or_status_of_an_oauth_run(
    own_redis_server: ServerProcess, bridge_factory: Callable[[dict[str, Any]], BridgeProcess],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    config = replace(FAST_CONFIG, oauth_dir=tmp_path / "keys", order_confirmation=False)
    with ThreadedSimulator(config) as threaded:
        sim = threaded.sim
        assert sim.oauth_file is not None and sim.cert_file is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sim.cert_file))
        settings = oauth_bridge_config(sim.origin, str(sim.oauth_file), str(sim.cert_file),
                                       {"url": own_redis_server.address}, tmp_path / "spool")  # fmt: skip
        settings["logging"] = {"level": "DEBUG", "format": "json"}
        bridge = bridge_factory(settings)
        client = ibind_client(sim.base_url, str(sim.oauth_file))
        store = redis.Redis.from_url(own_redis_server.address)
        try:
            order = place_market_order(client, 265598)
            assert _eventually(lambda: any(orjson.loads(f[b"data"]).get("status") == "Filled"
                                           and orjson.loads(f[b"data"])["order_id"] == order
                                           for _, f in store.xrange(ORDERS)), 30), bridge.log()[-3000:]  # fmt: skip
            threaded.call("lst_expire")
            issued = sim.gateway.oauth.issued if sim.gateway.oauth else 0
            assert _eventually(lambda: sim.gateway.oauth is not None and sim.gateway.oauth.issued > issued, 20)
            threaded.call("refuse_upgrade")  # the reconnect's upgrade (URL with oauth_token) fails once
            threaded.call("drop")
            def reconnected() -> bool:
                _, failed, after = bridge.log().partition("connect failed")
                return bool(failed) and "gateway reconciled" in after

            assert _eventually(reconnected, 30), bridge.log()[-3000:]
            exposed = {
                "metrics": http_get(bridge.admin_port, "/metrics")[1],
                "status": http_get(bridge.admin_port, "/status")[1],
                "events": "\n".join(repr(entry) for key in store.scan_iter() if store.type(key) == b"stream"
                                    for entry in store.xrange(key)),
            }
            secrets = secret_material(sim)
        finally:
            client.close()
            store.close()
        assert bridge.stop() == 0
        exposed["log"] = bridge.log()
    for seen in ("live session token obtained", "HTTP 401; requesting a new live session token", "connect failed",
                 "socket lost", '"level":"debug"'):  # fmt: skip
        assert seen in exposed["log"]
    assert "ibkr_bridge_" in exposed["metrics"] and '"session_epoch"' in exposed["status"]
    assert "Filled" in exposed["events"]
    assert sum(1 for name in secrets if name.startswith("lst_") and not name.endswith("_hex")) >= 2
    leaks = [(name, where) for name, value in secrets.items() for where, text in exposed.items() if value in text]
    assert not leaks, f"secret material exposed: {leaks}"

