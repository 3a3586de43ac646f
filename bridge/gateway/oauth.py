"""OAuth 1.0a consumer state for the Web API: the key set read from its files, the live session
token (requested, validated, replaced before it expires and after a 401), and every request's
``Authorization`` header. The math is in :mod:`bridge.oauth1a`; this module adds the clock,
randomness and file reading.

The key set is ``oauth.json`` with ibind's ``OAuth1aConfig`` field names: ``consumer_key``,
``access_token``, ``access_token_secret``, ``dh_prime`` (hex), ``dh_generator``, ``realm``,
``signature_key_fp`` and ``encryption_key_fp`` (PEM files; a relative path is relative to the
``oauth.json`` file), or the PEM text itself as ``signature_key`` / ``encryption_key``.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.errors import ConfigError
from bridge.oauth1a import (
    LiveSessionToken,
    LstChallenge,
    OAuthKeySet,
    accept_lst,
    lst_challenge,
    lst_request_header,
    signed_request_header,
)

WEB_API_URL = "https://api.ibkr.com"
WS_USER_AGENT = "ClientPortalGW/1"  # the Web API's websocket expects the gateway's agent string
_NONCE_CHARS = string.ascii_letters + string.digits
_REQUIRED = ("consumer_key", "access_token", "access_token_secret", "dh_prime")


def load_key_set(path: Path) -> OAuthKeySet:
    """Read ``oauth.json`` and its PEM files; ConfigError naming every problem."""
    where = f"gateway.oauth_file {path}"
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read the key set ({exc.strerror})"]) from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError([f"{where}: not valid JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: must be a JSON object with ibind's OAuth1aConfig field names"])
    problems = [f"{where}: {name} is required (from the OAuth portal)" for name in _REQUIRED
                if not isinstance(data.get(name), str) or not data[name]]  # fmt: skip
    keys = {kind: _private_key(data, kind, path.parent, where, problems)
            for kind in ("signature", "encryption")}  # fmt: skip
    prime = _hex(data.get("dh_prime"), where, problems)
    generator = _int(data.get("dh_generator", 2), where, problems)
    if problems:
        raise ConfigError(problems)
    signature_key, encryption_key = keys["signature"], keys["encryption"]
    assert signature_key is not None and encryption_key is not None
    key_set = OAuthKeySet(
        consumer_key=data["consumer_key"], access_token=data["access_token"],
        access_token_secret=data["access_token_secret"], signature_key=signature_key,
        encryption_key=encryption_key, dh_prime=prime, dh_generator=generator,
        realm=str(data.get("realm") or "limited_poa"),
    )  # fmt: skip
    try:
        key_set.prepend()
    except Exception as exc:  # noqa: BLE001 - OAuthRejected, or base64 of the wrong shape
        raise ConfigError([f"{where}: access_token_secret: {exc}"]) from None
    return key_set


def _private_key(data: Mapping[str, Any], kind: str, base: Path, where: str,
                 problems: list[str]) -> rsa.RSAPrivateKey | None:  # fmt: skip
    inline, file = data.get(f"{kind}_key"), data.get(f"{kind}_key_fp")
    if isinstance(inline, str) and inline:
        pem, source = inline.encode(), f"{kind}_key"
    elif isinstance(file, str) and file:
        key_path = base / file
        try:
            pem, source = key_path.read_bytes(), f"{kind}_key_fp {key_path}"
        except OSError as exc:
            problems.append(f"{where}: {kind}_key_fp {key_path}: cannot read ({exc.strerror})")
            return None
    else:
        problems.append(f"{where}: {kind}_key_fp (a PEM file) or {kind}_key (PEM text) is required")
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        problems.append(f"{where}: {source}: not an unencrypted PEM private key")
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        problems.append(f"{where}: {source}: must be an RSA key")
        return None
    return key


def _hex(value: object, where: str, problems: list[str]) -> int:
    if not isinstance(value, str):
        return 0  # reported as missing
    try:
        return int(value.strip().removeprefix("0x"), 16)
    except ValueError:
        problems.append(f"{where}: dh_prime must be hexadecimal (the prime of `openssl dhparam 2048`)")
        return 0


def _int(value: object, where: str, problems: list[str]) -> int:
    try:
        return int(str(value))
    except ValueError:
        problems.append(f"{where}: dh_generator must be an integer, usually 2")
        return 2


class OAuthConsumer:
    """One consumer's live session token and request signing (event-loop confined, no locking)."""

    def __init__(self, keys: OAuthKeySet, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.keys = keys
        self.clock_ns = clock_ns
        self.lst: LiveSessionToken | None = None
        self.lsts_obtained = 0
        self.rejections = 0  # 401s answered by regenerating the token

    @property
    def access_token(self) -> str:
        return self.keys.access_token

    def _now_ms(self) -> int:
        return self.clock_ns() // 1_000_000

    def needs_lst(self) -> bool:
        return self.lst is None or self.lst.due(self._now_ms())

    def lst_request(self, url: str) -> tuple[LstChallenge, str]:
        """A fresh Diffie-Hellman challenge and the ``Authorization`` header that carries it."""
        challenge = lst_challenge(self.keys, secrets.randbits(256) | 1)
        header = lst_request_header(self.keys, challenge, url, _nonce(), self.clock_ns() // 1_000_000_000)
        return challenge, header

    def lst_received(self, challenge: LstChallenge, body: object) -> None:
        self.lst = accept_lst(self.keys, challenge, body, self._now_ms())
        self.lsts_obtained += 1

    def sign(self, method: str, url: str, query: Mapping[str, str]) -> str:
        assert self.lst is not None, "sign() before a live session token"
        return signed_request_header(self.keys, self.lst, method, url, query, _nonce(),
                                     self.clock_ns() // 1_000_000_000)  # fmt: skip

    def rejected(self, token: LiveSessionToken | None) -> None:
        """The server answered 401 to a request signed with ``token``: it is no longer good (a
        newer one another call already obtained is kept)."""
        if self.lst is token:
            self.lst = None
        self.rejections += 1

    def redact(self, text: str) -> str:
        """``text`` with the access token, consumer key and live session token replaced by ``***``."""
        for value in (*self.keys.secrets(), *((self.lst.token,) if self.lst else ())):
            if value:
                text = text.replace(value, "***")
        return text


def _nonce() -> str:
    return "".join(secrets.choice(_NONCE_CHARS) for _ in range(16))
