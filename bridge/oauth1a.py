"""IBKR Web API OAuth 1.0a: the signing math and the live session token (pure; no I/O, no clock).

The consumer side (the bridge) and the simulated server share these definitions:

- base string: ``METHOD&quote_plus(url)&quote_plus(k1=v1&k2=v2...)`` over the sorted OAuth
  parameters (and query parameters), with the decrypted access-token secret (hex) prepended for
  the live-session-token request;
- ``RSA-SHA256`` (PKCS#1 v1.5, the consumer's signature key) signs the live-session-token request,
  ``HMAC-SHA256`` keyed with the live session token signs every other request; both signatures
  travel base64, percent-encoded, in ``Authorization: OAuth realm="...", k="v", ...``;
- live session token: a Diffie-Hellman exchange (``g^a mod p`` out, ``g^b mod p`` back), then
  ``LST = base64(HMAC-SHA1(K, prepend bytes))`` with ``K`` as a big-endian two's-complement byte
  array (a leading zero byte when the top bit is set); the server proves it with
  ``hex(HMAC-SHA1(LST, consumer key))``.

Every input that varies (nonce, timestamp, Diffie-Hellman secret, current time) is a parameter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote_plus, unquote_plus

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.errors import GatewayRejected

LST_ENDPOINT = "/oauth/live_session_token"
# RFC 3526 group 14 (2048-bit MODP): what ``openssl dhparam 2048`` gives is equally valid.
RFC3526_PRIME_2048 = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF"
)


class OAuthRejected(GatewayRejected):
    """The live session token could not be computed or did not prove itself."""


@dataclass(frozen=True, slots=True)
class OAuthKeySet:
    """What IBKR's self-service OAuth portal gives a consumer (the keys already loaded)."""

    consumer_key: str = field(repr=False)
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)  # base64, RSA-encrypted with the encryption key
    signature_key: rsa.RSAPrivateKey = field(repr=False)
    encryption_key: rsa.RSAPrivateKey = field(repr=False)
    dh_prime: int = field(repr=False)
    dh_generator: int = 2
    realm: str = "limited_poa"

    def prepend(self) -> str:
        """The decrypted access-token secret as hex (prefixes the live-session-token base string)."""
        try:
            encrypted = base64.b64decode(self.access_token_secret)
            secret = self.encryption_key.decrypt(encrypted, padding.PKCS1v15())
        except ValueError as exc:
            raise OAuthRejected(
                "access_token_secret does not decrypt with the encryption key (wrong key file or secret)"
            ) from exc
        return secret.hex()

    def secrets(self) -> tuple[str, ...]:
        """Every string that must never appear in a log line, metric or event."""
        return (self.consumer_key, self.access_token, self.access_token_secret)


@dataclass(frozen=True, slots=True)
class LiveSessionToken:
    token: str = field(repr=False)  # base64
    expires_ms: int
    issued_ms: int

    def due(self, now_ms: int, fraction: float = 0.1, max_margin_ms: int = 300_000) -> bool:
        """Time to replace it: within ``fraction`` of its lifetime (at most ``max_margin_ms``) of expiry."""
        margin = min(max_margin_ms, int((self.expires_ms - self.issued_ms) * fraction))
        return now_ms >= self.expires_ms - margin


@dataclass(frozen=True, slots=True)
class LstChallenge:
    """The consumer's half of one live-session-token exchange."""

    dh_random: int = field(repr=False)
    prepend: str = field(repr=False)
    challenge_hex: str


# ------------------------------------------------------------------------------------ signing


def base_string(method: str, url: str, params: Mapping[str, str], prepend: str | None = None) -> str:
    pairs = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    text = f"{method.upper()}&{quote_plus(url)}&{quote_plus(pairs)}"
    return f"{prepend}{text}" if prepend is not None else text


def rsa_sha256(key: rsa.RSAPrivateKey, text: str) -> str:
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return quote_plus(base64.b64encode(signature).decode())


def verify_rsa_sha256(key: rsa.RSAPublicKey, text: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(unquote_plus(signature))
        key.verify(raw, text.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, TypeError, ArithmeticError):
        return False
    except Exception:  # noqa: BLE001 - cryptography's InvalidSignature
        return False
    return True


def hmac_sha256(lst: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(lst), text.encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def authorization_header(params: Mapping[str, str], realm: str) -> str:
    pairs = ", ".join(f'{k}="{v}"' for k, v in sorted(params.items()))
    return f'OAuth realm="{realm}", {pairs}'


def parse_authorization(header: str) -> dict[str, str]:
    """``OAuth realm="x", k="v", ...`` -> ``{"realm": "x", "k": "v"}`` ({} if not an OAuth header)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "oauth":
        return {}
    found: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            found[name.strip()] = value.strip().strip('"')
    return found


def oauth_params(keys: OAuthKeySet, method: str, nonce: str, timestamp_s: int) -> dict[str, str]:
    return {
        "oauth_consumer_key": keys.consumer_key,
        "oauth_nonce": nonce,
        "oauth_signature_method": method,
        "oauth_timestamp": str(timestamp_s),
        "oauth_token": keys.access_token,
    }


def signed_request_header(
    keys: OAuthKeySet,
    lst: LiveSessionToken,
    method: str,
    url: str,
    query: Mapping[str, str],
    nonce: str,
    timestamp_s: int,
) -> str:
    """``Authorization`` for a protected resource (HMAC-SHA256 keyed with the live session token).

    Query parameters are part of the base string, as the OAuth 1.0a base-string rule says.
    """
    params = oauth_params(keys, "HMAC-SHA256", nonce, timestamp_s)
    params["oauth_signature"] = hmac_sha256(lst.token, base_string(method, url, {**params, **query}))
    return authorization_header(params, keys.realm)


# ------------------------------------------------------------------------------ live session token


def lst_challenge(keys: OAuthKeySet, dh_random: int) -> LstChallenge:
    challenge = pow(keys.dh_generator, dh_random, keys.dh_prime)
    return LstChallenge(dh_random, keys.prepend(), format(challenge, "x"))


def lst_request_header(
    keys: OAuthKeySet, challenge: LstChallenge, url: str, nonce: str, timestamp_s: int
) -> str:
    """``Authorization`` for ``POST /oauth/live_session_token`` (RSA-SHA256, prepend, DH challenge)."""
    params = oauth_params(keys, "RSA-SHA256", nonce, timestamp_s)
    params["diffie_hellman_challenge"] = challenge.challenge_hex
    text = base_string("POST", url, params, prepend=challenge.prepend)
    params["oauth_signature"] = rsa_sha256(keys.signature_key, text)
    return authorization_header(params, keys.realm)


def shared_secret_bytes(value: int) -> bytes:
    """``K`` as Java's ``BigInteger.toByteArray()``: big-endian with a sign bit (so a zero byte first
    when the top bit of the top byte is set)."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def compute_lst(shared_secret: int, prepend: str) -> str:
    digest = hmac.new(shared_secret_bytes(shared_secret), bytes.fromhex(prepend), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def lst_signature(lst: str, consumer_key: str) -> str:
    return hmac.new(base64.b64decode(lst), consumer_key.encode(), hashlib.sha1).hexdigest()


def accept_lst(keys: OAuthKeySet, challenge: LstChallenge, body: object, now_ms: int) -> LiveSessionToken:
    """The live session token from the server's answer, checked against its signature."""
    if not isinstance(body, Mapping):
        raise OAuthRejected("live session token response is not a JSON object")
    response, proof, expires = (body.get("diffie_hellman_response"), body.get("live_session_token_signature"),
                                body.get("live_session_token_expiration"))  # fmt: skip
    if not isinstance(response, str) or not isinstance(proof, str) or not isinstance(expires, int):
        raise OAuthRejected("live session token response lacks diffie_hellman_response, "
                            "live_session_token_signature or live_session_token_expiration")  # fmt: skip
    try:
        shared = pow(int(response, 16), challenge.dh_random, keys.dh_prime)
    except ValueError as exc:
        raise OAuthRejected("diffie_hellman_response is not hexadecimal") from exc
    token = compute_lst(shared, challenge.prepend)
    if not hmac.compare_digest(lst_signature(token, keys.consumer_key), proof):
        raise OAuthRejected("live session token failed validation (its signature does not match the "
                            "consumer key): check consumer_key, the encryption key and dh_prime")  # fmt: skip
    return LiveSessionToken(token, expires, now_ms)
