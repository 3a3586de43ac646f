"""The OAuth 1.0a math against ibind's independent implementation, and the key-set loader's errors."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from ibind.oauth import oauth1a  # the independent implementation (pycryptodome)

from bridge.errors import ConfigError
from bridge.gateway.oauth import OAuthConsumer, load_key_set
from bridge.oauth1a import (
    RFC3526_PRIME_2048,
    LiveSessionToken,
    OAuthRejected,
    accept_lst,
    authorization_header,
    base_string,
    compute_lst,
    hmac_sha256,
    lst_challenge,
    lst_signature,
    parse_authorization,
    rsa_sha256,
    shared_secret_bytes,
    verify_rsa_sha256,
)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())  # fmt: skip


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    signature = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "sig.pem").write_bytes(_pem(signature))
    (directory / "enc.pem").write_bytes(_pem(encryption))
    secret = base64.b64encode(encryption.public_key().encrypt(b"s" * 24, padding.PKCS1v15())).decode()
    (directory / "oauth.json").write_text(json.dumps({
        "consumer_key": "TESTCONS1", "access_token": "abc123", "access_token_secret": secret,
        "dh_prime": RFC3526_PRIME_2048, "dh_generator": "2", "realm": "test_realm",
        "signature_key_fp": "sig.pem", "encryption_key_fp": "enc.pem",
    }))  # fmt: skip
    return directory


def test_the_base_string_is_ibinds() -> None:
    params = {"oauth_nonce": "n0nce", "oauth_timestamp": "1700000000", "oauth_token": "tok", "b": "x y"}
    url = "https://api.ibkr.com/v1/api/iserver/account/orders"
    assert base_string("GET", url, params) == oauth1a.generate_base_string("GET", url, params)
    assert base_string("POST", url, params, "ab12") == oauth1a.generate_base_string("POST", url, params,
                                                                                   prepend="ab12")  # fmt: skip


@settings(deadline=None, max_examples=300)
@given(st.integers(min_value=0, max_value=(1 << 2048) - 1))
def test_the_shared_secret_is_encoded_like_ibinds_byte_array(value: int) -> None:
    assert list(shared_secret_bytes(value)) == oauth1a.to_byte_array(value)


def test_the_live_session_token_matches_ibinds_computation_on_both_sides(key_dir: Path) -> None:
    keys = load_key_set(key_dir / "oauth.json")
    prime = int(RFC3526_PRIME_2048, 16)
    challenge = lst_challenge(keys, secrets.randbits(256))
    server_secret = secrets.randbits(256)
    response = format(pow(2, server_secret, prime), "x")
    server_lst = compute_lst(pow(int(challenge.challenge_hex, 16), server_secret, prime), challenge.prepend)
    ibind_lst = oauth1a.calculate_live_session_token(RFC3526_PRIME_2048, format(challenge.dh_random, "x"),
                                                     response, challenge.prepend)  # fmt: skip
    assert server_lst == ibind_lst
    body = {"diffie_hellman_response": response, "live_session_token_signature": lst_signature(server_lst, "TESTCONS1"),
            "live_session_token_expiration": 5}  # fmt: skip
    assert accept_lst(keys, challenge, body, 1).token == ibind_lst
    assert oauth1a.validate_live_session_token(ibind_lst, body["live_session_token_signature"], "TESTCONS1")


def test_a_live_session_token_with_a_wrong_proof_is_rejected(key_dir: Path) -> None:
    keys = load_key_set(key_dir / "oauth.json")
    challenge = lst_challenge(keys, 12345)
    body = {"diffie_hellman_response": "2", "live_session_token_signature": "00", "live_session_token_expiration": 1}
    with pytest.raises(OAuthRejected, match="failed validation"):
        accept_lst(keys, challenge, body, 0)
    with pytest.raises(OAuthRejected, match="lacks"):
        accept_lst(keys, challenge, {"diffie_hellman_response": "2"}, 0)


def test_signatures_verify_across_implementations(key_dir: Path) -> None:
    key = serialization.load_pem_private_key((key_dir / "sig.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    ibind_key = oauth1a.read_private_key(str(key_dir / "sig.pem"))
    text = "POST&https%3A%2F%2Fapi.ibkr.com&a%3D1"
    assert rsa_sha256(key, text) == oauth1a.generate_rsa_sha_256_signature(text, ibind_key)
    assert verify_rsa_sha256(key.public_key(), text, oauth1a.generate_rsa_sha_256_signature(text, ibind_key))
    assert not verify_rsa_sha256(key.public_key(), text + "x", rsa_sha256(key, text))
    lst = base64.b64encode(b"k" * 20).decode()
    assert hmac_sha256(lst, text) == oauth1a.generate_hmac_sha_256_signature(text, lst)


def test_the_authorization_header_round_trips_and_matches_ibinds() -> None:
    params = {"oauth_token": "t", "oauth_signature": "a%2Bb", "oauth_nonce": "n"}
    header = authorization_header(params, "limited_poa")
    assert header == oauth1a.generate_authorization_header_string(params, "limited_poa")
    assert parse_authorization(header) == {"realm": "limited_poa", **params}
    assert unquote_plus(parse_authorization(header)["oauth_signature"]) == "a+b"
    assert parse_authorization("Bearer x") == {}


def test_the_token_is_due_within_a_tenth_of_its_lifetime_capped_at_five_minutes() -> None:
    short = LiveSessionToken("x", expires_ms=10_000, issued_ms=0)
    assert not short.due(8_999) and short.due(9_000)
    day = LiveSessionToken("x", expires_ms=86_400_000, issued_ms=0)
    assert not day.due(86_400_000 - 300_001) and day.due(86_400_000 - 300_000)


def test_redaction_hides_every_secret_of_the_key_set(key_dir: Path) -> None:
    consumer = OAuthConsumer(load_key_set(key_dir / "oauth.json"))
    text = f"wss://x/ws?oauth_token=abc123 key TESTCONS1 {consumer.keys.access_token_secret}"
    assert consumer.redact(text) == "wss://x/ws?oauth_token=*** key *** ***"
    assert "abc123" not in repr(consumer.keys) and "TESTCONS1" not in repr(consumer.keys)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"consumer_key": None}, "consumer_key is required"),
        ({"dh_prime": "not-hex"}, "dh_prime must be hexadecimal"),
        ({"signature_key_fp": "missing.pem"}, "signature_key_fp"),
        ({"encryption_key_fp": "oauth.json"}, "not an unencrypted PEM private key"),
        ({"access_token_secret": base64.b64encode(b"x" * 10).decode()}, "access_token_secret"),
    ],
)
def test_a_bad_key_set_names_the_field(key_dir: Path, tmp_path: Path, change: dict[str, object],
                                       message: str) -> None:  # fmt: skip
    data = json.loads((key_dir / "oauth.json").read_text())
    data.update({k: v for k, v in change.items() if v is not None})
    for k in [k for k, v in change.items() if v is None]:
        del data[k]
    for name in ("sig.pem", "enc.pem"):
        (tmp_path / name).write_bytes((key_dir / name).read_bytes())
    (tmp_path / "oauth.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as error:
        load_key_set(tmp_path / "oauth.json")
    assert any(message in problem and "gateway.oauth_file" in problem for problem in error.value.problems)
