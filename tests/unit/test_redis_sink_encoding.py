"""The Redis sink's XADD commands, read back as a server would parse them."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.sinks.redis import RedisSinkOptions, XaddEncoder
from tests.fixtures.brokers import order_record, quote_record


def parse_commands(payload: bytes) -> list[list[bytes]]:
    """A minimal RESP reader for arrays of bulk strings."""
    commands, pos = [], 0
    while pos < len(payload):
        assert payload[pos : pos + 1] == b"*"
        end = payload.index(b"\r\n", pos)
        count, pos = int(payload[pos + 1 : end]), end + 2
        args = []
        for _ in range(count):
            assert payload[pos : pos + 1] == b"$"
            end = payload.index(b"\r\n", pos)
            length = int(payload[pos + 1 : end])
            args.append(payload[end + 2 : end + 2 + length])
            pos = end + 2 + length + 2
        commands.append(args)
    return commands


def test_each_record_is_one_xadd_with_cloudevents_fields_key_and_data() -> None:
    quote = quote_record("md", 265598, 1)
    records = [quote, order_record("orders", 7, 2), quote]
    commands = parse_commands(XaddEncoder(None, None).encode(records, now_ms=0)[0])

    xadd_md, xadd_orders = [b"XADD", b"md", b"*"], [b"XADD", b"orders", b"*"]
    assert [c[:3] for c in commands] == [xadd_md, xadd_orders, xadd_md]
    fields = dict(zip(commands[1][3::2], commands[1][4::2], strict=True))
    assert fields[b"id"] == records[1].id.encode()
    assert fields[b"type"] == b"com.ibkr.orders.order.v1"
    assert fields[b"sessionepoch"] == b"1"
    assert fields[b"key"] == b"7"
    assert fields[b"data"] == records[1].data
    assert commands[0] == commands[2]  # cached fragments encode identically


def test_maxlen_trimming_is_approximate() -> None:
    (command,) = parse_commands(XaddEncoder(5000, None).encode([order_record("s", 1, 1)], now_ms=0)[0])
    assert command[:6] == [b"XADD", b"s", b"MAXLEN", b"~", b"5000", b"*"]


def test_minid_trimming_drops_entries_older_than_the_retention() -> None:
    encoder = XaddEncoder(None, 60_000)
    (command,) = parse_commands(encoder.encode([order_record("s", 1, 1)], now_ms=1_700_000_060_000)[0])
    assert command[:6] == [b"XADD", b"s", b"MINID", b"~", b"1700000000000", b"*"]


def test_trimming_two_ways_at_once_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="choose one"):
        RedisSinkOptions(maxlen=10, retention_ms=1000)


def test_tls_files_without_a_rediss_url_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        RedisSinkOptions(url="redis://localhost:6379/0", tls_cafile="/ca.pem")


def test_the_url_password_stays_out_of_repr_and_of_the_logged_endpoint() -> None:
    options = RedisSinkOptions(url="rediss://bridge:s3cret@redis.internal:6380/2", password="s3cret")
    assert "s3cret" not in repr(options)
    assert options.endpoint == "redis.internal:6380/2"
    assert options.client_kwargs()["ssl_check_hostname"] is True
