"""Where each setting came from, and configuration problems worded for the person who set it.

Settings are layered defaults < YAML file < ``BRIDGE_*`` environment < command-line flags.
:class:`Layers` merges them and remembers, for every path it set, which layer set it, so a
problem is blamed on the variable or flag that set the value, not on the file. Problems name
the field path (``subscriptions.market_data.conids[0]``), the value, what is allowed and,
for an unknown key, the closest allowed key.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

ENV_PREFIX = "BRIDGE_"
ENV_DELIMITER = "__"

Loc = tuple[str | int, ...]


def dotted(loc: Loc) -> str:
    """``("subscriptions", "market_data", "conids", 0)`` -> ``subscriptions.market_data.conids[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: the field, and what is wrong (value and what is allowed)."""

    loc: Loc
    message: str


@dataclass(slots=True)
class Layers:
    """The merged configuration and the origin (file, variable or flag) of every path set."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)

    def add(self, values: Mapping[str, Any], origin: str | Mapping[tuple[str, ...], str]) -> None:
        """Merge ``values`` over what is there; ``origin`` names the layer or each leaf path."""
        for path, value in _leaves(values):
            _put(self.data, path, value)
            self.origins[path] = origin if isinstance(origin, str) else origin.get(path, "")

    def origin_of(self, loc: Loc) -> str | None:
        """Who set the value at ``loc`` (the longest set path that is a prefix of it)."""
        path = tuple(str(part) for part in loc)
        for end in range(len(path), 0, -1):
            found = self.origins.get(path[:end])
            if found:
                return found
        # An error on a section (e.g. an unknown key inside it) belongs to whoever set inside it.
        below = {o for p, o in self.origins.items() if p[: len(path)] == path and o}
        return below.pop() if len(below) == 1 else None


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """``BRIDGE_*`` variables as nested values (``__`` nests) and, per path, the variable's name.

    A value that is a JSON list or object (``["265598","8314"]``) is decoded; every other value
    stays a string for the field to parse (``10``, ``true``, ``265598,8314``).
    """
    values: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
            continue
        raw = environ[name]
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split(ENV_DELIMITER))
        value: Any = raw
        if raw[:1] in ("[", "{"):
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                value = raw
        leaves = _leaves(value, path) if isinstance(value, dict) and value else [(path, value)]
        for leaf, leaf_value in leaves:
            _put(values, leaf, leaf_value)
            origins[leaf] = name
    return values, origins


def closest(word: str, allowed: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def render(problem: Problem, origin: str | None) -> str:
    return f"{dotted(problem.loc)}: {problem.message} ({origin or 'the default'})"


def without(data: Mapping[str, Any], locs: Iterable[Loc]) -> dict[str, Any]:
    """A copy of ``data`` with the value at each ``loc`` removed (list items included).

    Where the value was given in another shape (``"1,x"`` for a list), the whole value goes.
    """
    copy: Any = orjson.loads(orjson.dumps(data, default=str))
    order = sorted(locs, key=lambda loc: [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in loc])
    for loc in reversed(order):
        parent, key = None, None
        node = copy
        for part in loc:
            if not _has(node, part):
                break
            parent, key, node = node, part, node[part]
        if parent is not None:
            del parent[key]
    return dict(copy)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _leaves(values: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            out += _leaves(value, path)
        else:
            out.append((path, value))
    return out


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value
