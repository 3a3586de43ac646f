"""Hostile gateway frames as JSON text: deep nesting, huge integers, NaN/Infinity tokens, lone
surrogates, duplicate keys and wrong types for every known field. Shared by the hypothesis
properties (``tests/property/test_hostile_frames.py``) and the long fuzz run (``fuzz_frames``)."""

from __future__ import annotations

import random

import orjson

from bridge.ingest.fields import MARKET_DATA_FIELDS
from bridge.ingest.normalize.account import _SUMMARY_KNOWN
from bridge.ingest.normalize.trading import EXECUTION_KEYS, ORDER_KEYS

QUOTE_KEYS = [*sorted(MARKET_DATA_FIELDS), "conid", "conidEx", "_updated", "server_id", "6119", "6509"]
ELEMENT_KEYS = sorted(ORDER_KEYS) + sorted(EXECUTION_KEYS) + ["orderId", "acct", "execution_id"]
ROW_KEYS = [*sorted(_SUMMARY_KNOWN), "key", "timestamp", "acctCode", "currency", "cashbalance", "dor", "upl"]
TOPICS = ["smd+265598", "smd+265598@SMART", "smd+0;;;265598/1,8314/-1", "sor", "str", "spl", "ssd+DU1", "sld+DU1",
          "sbd+DU1+265598", "smh+265598", "act", "sts", "system", "tic", "ntf", "blt", "error",
          "smd+123456789012345678901234567890", "smd+-1", "smd+", "sxx+1", "smd+18446744073709551616"]  # fmt: skip
HOSTILE_SCALARS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "123456789012345678901234567890",
                   "-123456789012345678901234567890", "18446744073709551616", "-9223372036854775809", "1e308",
                   '"\\ud800"', '"\\udfff"', '"a\\ud800b"', '"\\u0000"', "true", "null", "0", "-0", "1.5",
                   '""', '"C1.00"', '"H"', '"1,2K"', '"99999999999999999999"', '"-9223372036854775808"',
                   '"1e999"', "[]", "{}", '"\\ud83d\\ude00"']  # fmt: skip


def deep(rng: random.Random, depth: int) -> str:
    """A value nested ``depth`` levels: lists, objects or both."""
    leaf = rng.choice(HOSTILE_SCALARS)
    if rng.random() < 0.5:
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


def value(rng: random.Random, budget: int = 3) -> str:
    roll = rng.random()
    if roll < 0.55 or budget <= 0:
        return rng.choice(HOSTILE_SCALARS) if rng.random() < 0.7 else orjson.dumps(rng.random() * 1e6).decode()
    if roll < 0.7:
        return deep(rng, rng.choice([2, 40, 255, 256, 300, 600, 1000, 1023]))
    if roll < 0.85:
        return "[" + ",".join(value(rng, budget - 1) for _ in range(rng.randint(0, 3))) + "]"
    return obj(rng, rng.sample(ELEMENT_KEYS + QUOTE_KEYS, 3), budget - 1)


def obj(rng: random.Random, keys: list[str], budget: int) -> str:
    pairs = [f"{orjson.dumps(k).decode()}:{value(rng, budget)}" for k in keys]
    if pairs and rng.random() < 0.2:  # a duplicate key
        pairs.append(pairs[0].split(":", 1)[0] + ":" + value(rng, budget))
    return "{" + ",".join(pairs) + "}"


def frame(rng: random.Random) -> bytes:
    """One hostile frame: a known or hostile topic and known keys with values of any type."""
    topic = rng.choice(TOPICS)
    keys = rng.sample(QUOTE_KEYS, rng.randint(1, 6))
    body = obj(rng, keys, 2)[1:-1]
    head = f'"topic":{orjson.dumps(topic).decode()}'
    if topic in ("sor", "str"):
        elements = ",".join(obj(rng, rng.sample(ELEMENT_KEYS, rng.randint(1, 8)), 2) for _ in range(rng.randint(1, 3)))
        body = f'"args":[{elements}]'
    elif topic.startswith(("ssd", "sld")):
        rows = ",".join(obj(rng, rng.sample(ROW_KEYS, rng.randint(1, 5)), 2) for _ in range(rng.randint(1, 3)))
        body = f'"result":[{rows}]'
    elif topic == "spl":
        body = f'"args":{{"DU1.Core":{obj(rng, rng.sample(ROW_KEYS, 3), 2)}}}'
    text = "{" + head + ("," + body if body else "") + "}"
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:  # bytes that are not UTF-8: a lone surrogate encoded raw, stray 0xFF
        cut = rng.randrange(len(data))
        data = data[:cut] + rng.choice([b"\xed\xa0\x80", b"\xff", b"\x99", b"\xc3"]) + data[cut:]
    return data
