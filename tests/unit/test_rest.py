from __future__ import annotations

import socket
import ssl

import pytest

from bridge.errors import GatewayRejected, GatewayUnavailable
from bridge.gateway.rest import AuthState, GatewayRest, RestSettings, _status_error, build_ssl


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, b'{"error":"boom"}', GatewayUnavailable),
        (503, b"", GatewayUnavailable),
        (429, b'{"error":"Too Many Requests"}', GatewayUnavailable),
        (401, b'{"error":"not authenticated"}', GatewayUnavailable),
        (400, b'{"error":"Bad Request: no bridge","statusCode":400}', GatewayUnavailable),
        (400, b'{"error":"OrderID 1 is not valid"}', GatewayRejected),
        (404, b"not found", GatewayRejected),
    ],
)
def test_http_errors_are_translated_by_whether_a_retry_can_help(
    status: int, body: bytes, error: type[Exception]
) -> None:
    exc = _status_error("GET", "/iserver/accounts", status, body)
    assert type(exc) is error
    assert f"HTTP {status}" in str(exc)


def test_auth_state_keeps_absent_keys_as_none() -> None:
    state = AuthState.from_json({"authenticated": True, "message": ""})
    assert state == AuthState(authenticated=True, competing=None, connected=None, message="", fail=None)
    assert state.usable
    assert not AuthState.from_json({"authenticated": True, "competing": True}).usable
    assert not AuthState.from_json(None).usable


def test_tls_verification_is_on_unless_explicitly_switched_off() -> None:
    assert build_ssl(insecure_tls=False, ca_file=None).verify_mode is ssl.CERT_REQUIRED
    assert build_ssl(insecure_tls=True, ca_file=None).verify_mode is ssl.CERT_NONE


def test_the_websocket_cookie_carries_the_tickle_session() -> None:
    rest = GatewayRest(RestSettings(base_url="https://127.0.0.1:5000/v1/api"))
    assert rest.cookie_header("abc") == 'api={"session":"abc"}'
    assert rest.cookie_header(None) is None


async def test_a_refused_connection_is_reported_as_gateway_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with GatewayRest(RestSettings(base_url=f"http://127.0.0.1:{port}/v1/api", timeout_s=2)) as rest:
        with pytest.raises(GatewayUnavailable) as caught:
            await rest.tickle()
    assert caught.value.retryable
