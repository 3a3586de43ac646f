"""Where each setting came from, and configuration problems worded for the person who set it.

Settings are layered defaults < YAML file < ``BRIDGE_*`` environment < command-line flags.
:class:`Layers` merges them and remembers, for every path it set, which layer set it, so a
problem is blamed on the variable or flag that set the value, not on the file. Problems name
the field path (``subscriptions.market_data.conids[0]``), the value, what is allowed and,
for an unknown key, the closest allowed key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from bridge.errors import ConfigError

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


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: {_yaml_problem(exc)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, not {type(data).__name__}"])
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    parts = (getattr(exc, "context", None), getattr(exc, "problem", None))
    what = " ".join(str(part) for part in parts if part)
    return f"{where}not valid YAML ({what or exc})"


def field_names(root: Any, loc: Loc) -> list[str]:
    """The keys allowed in the section at ``loc`` of the model ``root`` (for "did you mean")."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = info.annotation
        while getattr(model, "__args__", None) and not hasattr(model, "model_fields"):
            model = next((a for a in model.__args__ if hasattr(a, "model_fields")), model.__args__[0])
    if dataclasses.is_dataclass(model):  # a section validated straight into a dataclass
        return [f.name for f in dataclasses.fields(model)]
    return list(getattr(model, "model_fields", {}))


def unwritable_directory(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as a writable directory; None when it can."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    fix = "choose a directory this user can write (e.g. ./spool) or create it with write access for this user"
    if not probe.is_dir():
        return f"{str(path)!r} cannot be created: {probe} is not a directory; {fix}"
    if not os.access(probe, os.W_OK | os.X_OK):
        verb = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        return f"{str(path)!r} {verb} by this user (uid {os.getuid()}); {fix}"
    return None


def secrets_in_yaml(data: Mapping[str, Any], secret_keys: Mapping[tuple[str, ...], str]) -> list[Problem]:
    """A problem for every secret found in YAML values, saying where it must come from instead."""
    problems = []
    for path, instead in secret_keys.items():
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            problems.append(Problem(path, f"secrets are not read from YAML files; set {instead}"))
    return problems


def describe(error: Mapping[str, Any], root: Any, secret_keys: Mapping[tuple[str, ...], str]) -> Problem:
    """A pydantic error as a Problem: the value (masked for secrets), what is allowed, a "did you mean"."""
    loc: Loc = tuple(error["loc"])
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's, a dataclass's
        names = field_names(root, loc[:-1])
        hint = closest(str(loc[-1]), names)
        allowed = f"did you mean {hint!r}?" if hint else f"allowed here: {', '.join(names)}"
        return Problem(loc, f"unknown key; {allowed}")
    if error["type"] == "missing":
        return Problem(loc, "required")
    secret_value = any(tuple(map(str, loc[: len(path)])) == path for path in secret_keys)
    shown = "***" if secret_value else repr(error.get("input"))
    message = str(error["msg"]).removeprefix("Value error, ")
    return Problem(loc, f"{shown} is not allowed: {message}")


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
