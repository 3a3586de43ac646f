"""What a normalized value may hold (pure): bounded nesting, 64-bit integers, bounded size.

orjson reads JSON nested up to 1,024 levels and integers up to 2**64 - 1, but writes nothing
nested deeper than 254 levels; a value parsed from a gateway string (a conid taken from a topic
target, seconds scaled to milliseconds) can exceed 64 bits. Whatever a normalizer keeps is
checked here first, so every event it emits can be encoded, and no single unknown value can make
every later event of its key too large to deliver.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 32  # levels of lists/objects an unknown value may keep; deeper values are replaced
MAX_EXTRA_VALUE_BYTES = 4096  # JSON bytes of one unknown value; larger values are replaced
MAX_EXTRA_BYTES = 32_768  # JSON bytes of all unknown values one quote carries; past it, new ones are dropped
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what orjson writes


def in_int_range(value: int) -> bool:
    return INT_MIN <= value <= INT_MAX


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (iterative: any depth is safe)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if type(item) is dict:
            stack.extend((child, depth + 1) for child in item.values() if type(child) in _CONTAINERS)
        elif type(item) is list:
            stack.extend((child, depth + 1) for child in item if type(child) in _CONTAINERS)
    return False


_CONTAINERS = (dict, list)


def replacement(reason: str, size_bytes: int | None) -> dict[str, Any]:
    """What an unknown value too deep or too large is kept as: a flag, the reason, its size."""
    return {"truncated": True, "reason": reason, "bytes": size_bytes}


def bounded_extra(raw: Any) -> tuple[Any, int]:
    """An unknown value as a quote keeps it, with its JSON size: the value itself, or
    :func:`replacement` when it nests deeper than ``MAX_DEPTH`` or its JSON exceeds
    ``MAX_EXTRA_VALUE_BYTES``. Strings and numbers are the common case and cost a type check."""
    cls = type(raw)
    if cls is str:
        size = len(raw) + 2
        if size <= MAX_EXTRA_VALUE_BYTES:
            return raw, size
        size = len(orjson.dumps(raw))
        return replacement(f"value larger than {MAX_EXTRA_VALUE_BYTES} bytes", size), 80
    if cls is not dict and cls is not list:
        return raw, 8
    if depth_exceeds(raw):
        return replacement(f"value nested deeper than {MAX_DEPTH} levels", None), 80
    size = len(orjson.dumps(raw))
    if size > MAX_EXTRA_VALUE_BYTES:
        return replacement(f"value larger than {MAX_EXTRA_VALUE_BYTES} bytes", size), 80
    return raw, size


def encodable(value: Any) -> bool:
    """Whether orjson can write ``value`` (depth, integer range, lone surrogates)."""
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return False
    return True
