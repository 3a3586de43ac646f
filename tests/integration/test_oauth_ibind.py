"""The simulator's Web API over OAuth 1.0a against ibind's own OAuth client, unchanged: live session
token, signed REST calls, refusals of forged keys, and market data over its websocket client."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fixtures.sim import SimProcess

ACCOUNT = "DU1234567"


@pytest.fixture
def oauth_sim(sim_process_factory: Callable[..., SimProcess], tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[SimProcess]:  # fmt: skip
    sim = sim_process_factory("--oauth", str(tmp_path / "keys"))
    assert sim.oauth_file is not None and sim.cert_file is not None
    # ibind verifies TLS whenever use_oauth is on; requests takes the CA from the environment.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.cert_file)
    logging.getLogger("ibind").setLevel(logging.WARNING)
    yield sim


def key_set(sim: SimProcess) -> dict[str, Any]:
    assert sim.oauth_file is not None
    return dict(json.loads(Path(sim.oauth_file).read_text()))


def ibind_client(sim: SimProcess, **overrides: Any) -> Any:
    from ibind import IbkrClient
    from ibind.oauth.oauth1a import OAuth1aConfig

    config = OAuth1aConfig(**{**key_set(sim), **overrides}, oauth_rest_url=f"{sim.base_url}/",
                           maintain_oauth=False, shutdown_oauth=False)  # fmt: skip
    return IbkrClient(use_oauth=True, oauth_config=config, account_id=ACCOUNT, auto_register_shutdown=False)


def oauth_stats(sim: SimProcess) -> dict[str, Any]:
    return dict(sim.stats()["oauth"])


def test_the_key_set_uses_ibind_field_names_and_keeps_private_keys_private(oauth_sim: SimProcess) -> None:
    from ibind.oauth.oauth1a import OAuth1aConfig

    data = key_set(oauth_sim)
    assert set(data) == {"consumer_key", "access_token", "access_token_secret", "dh_prime", "dh_generator", "realm",
                         "signature_key_fp", "encryption_key_fp"}  # fmt: skip
    OAuth1aConfig(**data).verify_config()
    assert len(data["consumer_key"]) == 9
    for name in ("signature_key_fp", "encryption_key_fp"):
        assert Path(data[name]).stat().st_mode & 0o077 == 0
    assert Path(oauth_sim.oauth_file or "").stat().st_mode & 0o077 == 0


def test_ibind_gets_a_live_session_token_and_makes_signed_calls(oauth_sim: SimProcess) -> None:
    client = ibind_client(oauth_sim)
    try:
        assert client.live_session_token
        session = client.tickle().data["session"]
        assert isinstance(session, str) and session
        assert client.authentication_status().data["authenticated"] is True
        assert client.portfolio_accounts().data[0]["id"] == ACCOUNT
        assert "orders" in client.live_orders().data
    finally:
        client.close()
    stats = oauth_stats(oauth_sim)
    assert stats["lsts_issued"] == 1
    assert stats["signed_requests"] >= 5  # ssodh/init, tickle, auth status, accounts, orders
    assert stats["refused"] == {}


def test_ibind_with_a_wrong_consumer_key_is_refused_with_invalid_consumer(oauth_sim: SimProcess) -> None:
    from ibind.support.errors import ExternalBrokerError

    with pytest.raises(ExternalBrokerError) as refused:
        ibind_client(oauth_sim, consumer_key="FORGEDKEY")
    assert refused.value.status_code == 401
    assert "invalid consumer" in str(refused.value)
    assert oauth_stats(oauth_sim)["lsts_issued"] == 0


def test_ibind_signing_with_a_key_the_portal_never_saw_is_refused(oauth_sim: SimProcess, tmp_path: Path) -> None:
    from ibind.support.errors import ExternalBrokerError

    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_path = tmp_path / "forged_signature.pem"
    forged_path.write_bytes(forged.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                                 serialization.NoEncryption()))  # fmt: skip
    with pytest.raises(ExternalBrokerError) as refused:
        ibind_client(oauth_sim, signature_key_fp=str(forged_path))
    assert refused.value.status_code == 401
    assert "invalid signature" in str(refused.value)
    assert oauth_stats(oauth_sim)["refused"] == {"LST failed, error: invalid signature": 1}


def test_brokerage_calls_before_ssodh_init_answer_no_bridge(oauth_sim: SimProcess) -> None:
    from ibind.support.errors import ExternalBrokerError

    client = ibind_client(oauth_sim, init_brokerage_session=False)
    try:
        assert client.authentication_status().data["authenticated"] is False
        with pytest.raises(ExternalBrokerError, match="no bridge"):
            client.live_orders()
        client.initialize_brokerage_session(compete=False)
        assert client.authentication_status().data["authenticated"] is True
        assert "orders" in client.live_orders().data
    finally:
        client.close()


def test_an_expired_live_session_token_is_refused_until_ibind_gets_a_new_one(oauth_sim: SimProcess) -> None:
    from ibind.support.errors import ExternalBrokerError

    client = ibind_client(oauth_sim)
    try:
        assert oauth_sim.apply_fault("lst_expire")["result"] == {"expired": 1}
        with pytest.raises(ExternalBrokerError) as refused:
            client.tickle()
        assert refused.value.status_code == 401
        assert "live session token expired" in str(refused.value)
        client.oauth_init(maintain_oauth=False, init_brokerage_session=False)
        assert client.tickle().data["session"]
    finally:
        client.close()
    assert oauth_stats(oauth_sim)["lsts_issued"] == 2


def test_the_live_session_token_expires_after_its_lifetime(sim_process_factory: Callable[..., SimProcess],
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from ibind.support.errors import ExternalBrokerError

    sim = sim_process_factory("--oauth", str(tmp_path / "keys"), "--lst-ttl-s", "0")
    assert sim.cert_file is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.cert_file)
    with pytest.raises(ExternalBrokerError, match="live session token expired"):
        ibind_client(sim)  # the token it gets is already expired when ssodh/init is signed with it


def test_ibind_websocket_client_streams_market_data_over_oauth(oauth_sim: SimProcess) -> None:
    from ibind import IbkrWsClient, QueueSink
    from ibind.events import MarketData
    from ibind.ibkr_ws.ibkr_subscriptions import MarketDataSubscription

    client = ibind_client(oauth_sim)
    sink = QueueSink()
    queue = sink.new_queue_accessor(MarketData)
    ws_client = IbkrWsClient(url=oauth_sim.ws_url, ibkr_client=client, account_id=ACCOUNT, use_oauth=True,
                             access_token=key_set(oauth_sim)["access_token"], cacert=oauth_sim.cert_file,
                             sink=sink)  # fmt: skip
    assert ws_client.start()
    try:
        handle = ws_client.subscribe(MarketDataSubscription(conid="265598", fields=["31", "84", "86"]))
        assert not ws_client.wait_all(handle, timeout_each=10)
        event = queue.get(block=True, timeout=10)
        assert event.conid == "265598"
        assert {"last_price", "bid_price", "ask_price"} & set(event.data)
    finally:
        ws_client.shutdown()
        client.close()
    stats = oauth_sim.stats()
    assert stats["upgrade_user_agents"].get("ClientPortalGW/1", 0) >= 1


@pytest.mark.parametrize("with_token", [False, True])
def test_a_websocket_upgrade_without_the_access_token_or_the_session_cookie_is_refused(
    oauth_sim: SimProcess, with_token: bool
) -> None:
    client = ibind_client(oauth_sim)
    try:
        session = client.tickle().data["session"]
    finally:
        client.close()
    token = key_set(oauth_sim)["access_token"]
    url = f"{oauth_sim.ws_url}?oauth_token={token}" if with_token else oauth_sim.ws_url
    cookie = None if with_token else f"api={session}"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, sslopt={"cert_reqs": ssl.CERT_NONE}, cookie=cookie, timeout=5)
    assert refused.value.status_code == 401


def test_market_data_flows_on_the_socket_only_after_ssodh_init(oauth_sim: SimProcess) -> None:
    from tests.fixtures.sim import SimSocket

    client = ibind_client(oauth_sim, init_brokerage_session=False)
    try:
        session = client.tickle().data["session"]
        socket = SimSocket(f"{oauth_sim.ws_url}?oauth_token={key_set(oauth_sim)['access_token']}",
                           cookie=f"api={session}")  # fmt: skip
        try:
            sts = socket.json_until(lambda o: o.get("topic") == "sts")[-1].json()
            assert sts["args"]["authenticated"] is False
            socket.send('smd+265598+{"fields":["31","84","86"]}')
            heartbeats = 0
            while heartbeats < 3:  # the simulator heartbeats every 0.5 s and would quote every 0.1 s
                frame = socket.json_until(lambda o: o.get("topic") in ("system", "smd+265598"))[-1].json()
                assert frame.get("topic") != "smd+265598", "market data before the brokerage session"
                heartbeats += "hb" in frame
            client.initialize_brokerage_session(compete=False)
            socket.send('smd+265598+{"fields":["31","84","86"]}')
            socket.json_until(lambda o: o.get("topic") == "smd+265598" and "31" in o)
        finally:
            socket.close()
    finally:
        client.close()
