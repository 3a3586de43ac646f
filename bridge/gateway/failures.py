"""Gateway failures worded for the person running the bridge.

- :func:`describe_error`: what went wrong, without object reprs (``ssl:<ssl.SSLContext object at
  0x7f...>``) or nested exception tuples.
- :func:`tls_hint`: for a certificate the bridge does not trust, what to do about it.
- :func:`close_text`: a websocket close code with its meaning (``closed 1000 (normal closure)``).
- :class:`FailureLog`: each change of state logged once with its cause, then a periodic summary
  while the same failure repeats, instead of lines per attempt forever.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from bridge.errors import BridgeError

_REPR = re.compile(r"\s*(ssl:)?<[\w.]+ object at 0x[0-9a-fA-F]+>")

CLOSE_CODES = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "abnormal closure, no close frame",
    1007: "invalid payload",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal server error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure",
}

SUMMARY_INTERVAL_S = 60.0


def close_text(code: int, reason: object) -> str:
    """``closed 1000 (normal closure)``; the peer's reason follows when it gave one."""
    meaning = CLOSE_CODES.get(code) or ("application code" if 4000 <= code < 5000 else "unknown code")
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    text = "" if reason is None else str(reason)
    return f"closed {code} ({meaning})" + (f": {text}" if text.strip() else "")


def describe_error(exc: BaseException) -> str:
    """One line: what failed and why, with no object reprs."""
    if isinstance(exc, BridgeError):  # worded already
        return _REPR.sub("", str(exc)).strip()
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        why = _verify_message(exc.certificate_error)
        return f"TLS certificate of {exc.host}:{exc.port} not trusted: {why}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        cause = os.strerror(os_error.errno) if os_error.errno else str(os_error) or type(os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port}: {cause}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {_verify_message(exc)}"
    text = _REPR.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _verify_message(exc: BaseException) -> str:
    return str(getattr(exc, "verify_message", "") or getattr(exc, "reason", "") or exc)


def is_certificate_failure(text: str) -> bool:
    return "certificate" in text.lower() and ("not trusted" in text or "CERTIFICATE_VERIFY_FAILED" in text)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_hint(url: str, insecure_tls: bool) -> str:
    """What to do about a gateway certificate the bridge does not trust."""
    elsewhere = "set gateway.ca_file to the CA certificate that signed the gateway's certificate"
    if is_loopback(url) and not insecure_tls:
        return (
            "the Client Portal Gateway ships a self-signed certificate: for this loopback gateway run with "
            f"--gateway-insecure-tls (gateway.insecure_tls: true); for a gateway on another host, {elsewhere}"
        )
    return f"{elsewhere} (gateway.insecure_tls is only for a loopback gateway)"


class FailureLog:
    """Connection attempts for one peer: a line per change of state, a summary while failing."""

    def __init__(
        self,
        logger: logging.Logger,
        peer: str,
        hint: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        self._log = logger
        self._peer = peer
        self._hint = hint
        self._clock = clock
        self._interval_s = summary_interval_s
        self._hinted: set[str] = set()
        self.failures = 0
        self._since = self._summarized = 0.0
        self._last: str | None = None

    def failed(self, reason: str) -> None:
        now = self._clock()
        if self.failures == 0:
            self._since = self._summarized = now
        self.failures += 1
        if reason != self._last:
            self._last = reason
            hint = self._hint(reason) if self._hint else None
            extra = f"; {hint}" if hint and hint not in self._hinted else ""
            if hint:
                self._hinted.add(hint)
            self._log.warning("%s unreachable: %s (retrying with backoff)%s", self._peer, reason, extra)
        elif now - self._summarized >= self._interval_s:
            self._summarized = now
            self._log.warning("%s still unreachable: %d attempts over %.0f s; last error: %s",
                              self._peer, self.failures, now - self._since, reason)  # fmt: skip
        else:
            self._log.debug("%s unreachable (attempt %d): %s", self._peer, self.failures, reason)

    def succeeded(self) -> None:
        if self.failures:
            self._log.info("%s reachable again after %d failed attempts over %.0f s",
                           self._peer, self.failures, self._clock() - self._since)  # fmt: skip
        self.failures = 0
        self._last = None
