"""Gateway failures worded for a person: no reprs, close codes with their meaning, one line per change."""

from __future__ import annotations

import logging
import socket
import ssl

import aiohttp
import pytest

from bridge.gateway.failures import FailureLog, close_text, describe_error, is_certificate_failure, tls_hint


def test_close_text_gives_the_code_meaning_and_omits_an_empty_reason() -> None:
    assert close_text(1000, None) == "closed 1000 (normal closure)"
    assert close_text(1000, "") == "closed 1000 (normal closure)"
    assert close_text(1001, b"bye") == "closed 1001 (going away): bye"
    assert close_text(4003, "x") == "closed 4003 (application code): x"


async def test_a_refused_connection_is_described_without_object_reprs() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"https://127.0.0.1:{port}/", ssl=ssl.create_default_context())
    assert "object at 0x" in str(caught.value)  # what aiohttp itself says
    text = describe_error(caught.value)
    assert text == f"cannot connect to 127.0.0.1:{port}: Connection refused"


def test_a_certificate_failure_gets_the_switch_for_loopback_and_ca_file_elsewhere() -> None:
    assert is_certificate_failure("POST /tickle: TLS certificate of 127.0.0.1:5000 not trusted: self-signed certificate")
    loopback = tls_hint("https://localhost:5000", insecure_tls=False)
    assert "--gateway-insecure-tls" in loopback and "gateway.ca_file" in loopback
    remote = tls_hint("https://gateway.internal:5000", insecure_tls=False)
    assert "--gateway-insecure-tls" not in remote and "gateway.ca_file" in remote


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_failure_is_logged_once_then_summarized(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(logging.getLogger("t"), "gateway", lambda r: "do X" if "cert" in r else None, clock, 60)
    caplog.set_level(logging.INFO, "t")
    for _ in range(30):
        failures.failed("connect failed: cert not trusted")
        clock.now += 3
    assert [r.getMessage() for r in caplog.records] == [
        "gateway unreachable: connect failed: cert not trusted (retrying with backoff); do X",
        "gateway still unreachable: 21 attempts over 60 s; last error: connect failed: cert not trusted",
    ]
    caplog.clear()
    failures.failed("connect failed: refused")  # a new cause is a change of state
    failures.failed("connect failed: cert not trusted")  # the hint is not repeated
    failures.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "gateway unreachable: connect failed: refused (retrying with backoff)",
        "gateway unreachable: connect failed: cert not trusted (retrying with backoff)",
        "gateway reachable again after 32 failed attempts over 90 s",
    ]
