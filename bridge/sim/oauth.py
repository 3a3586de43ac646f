"""The Web API's OAuth 1.0a side of the simulator (``ibkr-bridge sim --oauth DIR``).

On first start :func:`ensure_consumer` writes a test consumer's key set into DIR, the material
IBKR's self-service portal gives a user:

- ``oauth.json`` with ibind's ``OAuth1aConfig`` field names (``consumer_key``, ``access_token``,
  ``access_token_secret``, ``dh_prime``, ``dh_generator``, ``realm``, ``signature_key_fp``,
  ``encryption_key_fp``; the key paths absolute, so ``OAuth1aConfig(**json)`` works from anywhere);
- ``private_signature.pem`` and ``private_encryption.pem`` (RSA 2048, mode 0600);

and keeps, like the portal, what the server side holds: ``public_signature.pem``,
``public_encryption.pem`` and ``sim-consumer.json`` (the access-token secret in clear, which the
consumer only has encrypted). Later starts reuse them.

:class:`SimOAuth` checks every request: ``POST /oauth/live_session_token`` signed RSA-SHA256 with
the prepend, carrying a Diffie-Hellman challenge, answered with ``diffie_hellman_response``,
``live_session_token_signature`` and ``live_session_token_expiration``; every other call signed
HMAC-SHA256 with an unexpired live session token. Failures answer 401 in IBKR's shape,
``{"error": "id: <n>, error: invalid consumer", "statusCode": 401}``.

Tolerances (where clients differ and the real server is not documented): the signed URL may name
the host from the ``Host`` header or the address the client connected to (ibind sends
``Host: api.ibkr.com`` whatever the URL), and query parameters may be in the base string (the
OAuth rule) or not (ibind leaves them out).
"""

from __future__ import annotations

import base64
import os
import secrets
import string
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.oauth1a import (
    LST_ENDPOINT,
    RFC3526_PRIME_2048,
    base_string,
    compute_lst,
    hmac_sha256,
    lst_signature,
    parse_authorization,
    verify_rsa_sha256,
)

TIMESTAMP_WINDOW_S = 300
_NONCES_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class SimConsumer:
    """The server's record of one consumer (what the portal stored when the user registered)."""

    consumer_key: str
    access_token: str
    secret_hex: str  # the access-token secret in clear, as hex: the live-session-token prepend
    realm: str
    dh_prime: int
    dh_generator: int
    signature_public: rsa.RSAPublicKey


def ensure_consumer(directory: Path) -> SimConsumer:
    """Load DIR's test consumer, writing a new key set first when DIR has none."""
    server_file = directory / "sim-consumer.json"
    if not server_file.exists():
        _write_consumer(directory)
    record = orjson.loads(server_file.read_bytes())
    public = serialization.load_pem_public_key((directory / "public_signature.pem").read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    return SimConsumer(
        consumer_key=record["consumer_key"], access_token=record["access_token"],
        secret_hex=record["secret_hex"], realm=record["realm"], dh_prime=int(record["dh_prime"], 16),
        dh_generator=int(record["dh_generator"]),
        signature_public=public,
    )  # fmt: skip


def _write_consumer(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in ("signature", "encryption"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        paths[kind] = _write_private(directory / f"private_{kind}.pem", key)
        (directory / f"public_{kind}.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
        if kind == "encryption":
            encryption_public = key.public_key()
    secret = secrets.token_bytes(24)
    encrypted = base64.b64encode(encryption_public.encrypt(secret, padding.PKCS1v15())).decode()
    consumer_key = "".join(secrets.choice(string.ascii_uppercase) for _ in range(9))
    access_token = secrets.token_hex(10)
    common = {"consumer_key": consumer_key, "access_token": access_token, "dh_prime": RFC3526_PRIME_2048,
              "dh_generator": "2", "realm": "test_realm"}  # fmt: skip
    user = {**common, "access_token_secret": encrypted, "signature_key_fp": str(paths["signature"]),
            "encryption_key_fp": str(paths["encryption"])}  # fmt: skip
    _write_private_json(directory / "oauth.json", user)
    _write_private_json(directory / "sim-consumer.json", {**common, "secret_hex": secret.hex()})


def _write_private(path: Path, key: rsa.RSAPrivateKey) -> Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return path.resolve()


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the server sees of one request: method, candidate signed URLs, query, headers."""

    method: str
    urls: tuple[str, ...]  # every spelling of the URL the client may have signed
    query: dict[str, str]
    authorization: str


class OAuthRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SimOAuth:
    """Verifies signatures, runs the live-session-token exchange, expires tokens."""

    def __init__(self, consumer: SimConsumer, lst_ttl_s: float) -> None:
        self.consumer = consumer
        self.lst_ttl_s = lst_ttl_s
        self.lsts: dict[str, int] = {}  # live session token -> expiry (ms)
        self.issued = 0
        self.issued_tokens: deque[str] = deque(maxlen=1000)  # for tests that look for leaks
        self.verified = 0
        self.refused: Counter[str] = Counter()
        self._nonces: set[str] = set()
        self._nonce_order: deque[str] = deque()

    def stats(self) -> dict[str, Any]:
        return {"lsts_issued": self.issued, "signed_requests": self.verified, "refused": dict(self.refused),
                "lsts_active": len(self.lsts)}  # fmt: skip

    def expire_all(self) -> int:
        """Every live session token issued so far expires now."""
        self.lsts = dict.fromkeys(self.lsts, 0)
        return len(self.lsts)

    def _params(self, request: SignedRequest, now_ms: int) -> dict[str, str]:
        params = parse_authorization(request.authorization)
        consumer = self.consumer
        if not params.get("oauth_signature"):
            raise OAuthRefused("missing or malformed OAuth Authorization header")
        if params.get("oauth_consumer_key") != consumer.consumer_key:
            raise OAuthRefused("invalid consumer")
        if params.get("oauth_token") != consumer.access_token:
            raise OAuthRefused("invalid access token")
        if params.get("realm") != consumer.realm:
            raise OAuthRefused("invalid realm")
        timestamp = params.get("oauth_timestamp", "")
        if not timestamp.isdigit() or abs(int(timestamp) - now_ms // 1000) > TIMESTAMP_WINDOW_S:
            raise OAuthRefused("invalid timestamp")
        nonce = f"{timestamp}:{params.get('oauth_nonce', '')}"
        if nonce in self._nonces or not params.get("oauth_nonce"):
            raise OAuthRefused("nonce already used")
        self._remember(nonce)
        return params

    def _remember(self, nonce: str) -> None:
        self._nonces.add(nonce)
        self._nonce_order.append(nonce)
        if len(self._nonce_order) > _NONCES_KEPT:
            self._nonces.discard(self._nonce_order.popleft())

    @staticmethod
    def _texts(request: SignedRequest, params: dict[str, str], prepend: str | None) -> list[str]:
        signed = {k: v for k, v in params.items() if k not in ("realm", "oauth_signature")}
        return [base_string(request.method, url, {**signed, **query}, prepend)
                for url in request.urls for query in (request.query, {})]  # fmt: skip

    def live_session_token(self, request: SignedRequest, now_ms: int, dh_secret: int) -> dict[str, Any]:
        """Answer ``POST /oauth/live_session_token`` or raise :class:`OAuthRefused`."""
        params = self._params(request, now_ms)
        consumer = self.consumer
        if params.get("oauth_signature_method") != "RSA-SHA256":
            raise OAuthRefused("the live session token request must be signed RSA-SHA256")
        challenge_hex = params.get("diffie_hellman_challenge", "")
        try:
            challenge = int(challenge_hex, 16)
        except ValueError:
            raise OAuthRefused("missing or invalid diffie_hellman_challenge") from None
        if not 1 < challenge < consumer.dh_prime - 1:
            raise OAuthRefused("missing or invalid diffie_hellman_challenge")
        texts = self._texts(request, params, consumer.secret_hex)
        if not any(verify_rsa_sha256(consumer.signature_public, t, params["oauth_signature"]) for t in texts):
            raise OAuthRefused("LST failed, error: invalid signature")
        token = compute_lst(pow(challenge, dh_secret, consumer.dh_prime), consumer.secret_hex)
        expires_ms = now_ms + int(self.lst_ttl_s * 1000)
        self.lsts = {t: e for t, e in self.lsts.items() if e > now_ms}
        self.lsts[token] = expires_ms
        self.issued += 1
        self.issued_tokens.append(token)
        return {
            "diffie_hellman_response": format(pow(consumer.dh_generator, dh_secret, consumer.dh_prime), "x"),
            "live_session_token_signature": lst_signature(token, consumer.consumer_key),
            "live_session_token_expiration": expires_ms,
        }

    def verify(self, request: SignedRequest, now_ms: int) -> None:
        """A protected resource's request: HMAC-SHA256 with a live session token, or OAuthRefused."""
        params = self._params(request, now_ms)
        if params.get("oauth_signature_method") != "HMAC-SHA256":
            raise OAuthRefused("invalid signature method (HMAC-SHA256 with the live session token expected)")
        texts = self._texts(request, params, None)
        signature = params["oauth_signature"]
        for token, expires_ms in self.lsts.items():
            if any(secrets.compare_digest(hmac_sha256(token, t), signature) for t in texts):
                if expires_ms <= now_ms:
                    raise OAuthRefused("live session token expired")
                self.verified += 1
                return
        raise OAuthRefused("invalid signature (unknown or revoked live session token)")

    def is_lst_request(self, path: str) -> bool:
        return path.endswith(LST_ENDPOINT)
