"""JSON Schema (draft 2020-12) per event type, generated from the dataclasses (pure).

Schemas are closed (``additionalProperties: false``) and every field is required,
because the encoder writes every field (``null`` when unknown). The generated
files are committed under ``bridge/schemas/``; a test fails when a dataclass and
its committed schema drift. Regenerate with ``ibkr-bridge schemas --out bridge/schemas``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any

import orjson

from bridge.codec import SCHEMA_BASE
from bridge.events import EVENT_TYPES, Event, Quote
from bridge.ingest.fields import MARKET_DATA_FIELDS, json_type_of

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _quote_values() -> dict[str, Any]:
    properties = {name: {"type": json_type_of(kind), "description": f"field {fid}"}
                  for fid, (name, kind) in MARKET_DATA_FIELDS.items()}  # fmt: skip
    return {"type": "object", "properties": properties, "additionalProperties": False}


_OVERRIDES: dict[tuple[type[Event], str], Any] = {(Quote, "values"): _quote_values}


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def type_schema(self, tp: Any) -> dict[str, Any]:
        origin = typing.get_origin(tp)
        if tp is Any:
            return {}
        if tp is type(None):
            return {"type": "null"}
        simple = {str: "string", bool: "boolean", int: "integer", float: "number"}.get(tp)
        if simple is not None:
            return {"type": simple}
        if origin in (typing.Union, types.UnionType):
            return self._union(typing.get_args(tp))
        if origin is tuple or origin is list:
            return {"type": "array", "items": self.type_schema(typing.get_args(tp)[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.type_schema(typing.get_args(tp)[1])}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"type": "string", "enum": [m.value for m in tp]}
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            name = tp.__name__
            if name not in self.defs:
                self.defs[name] = {}
                self.defs[name] = self.object_schema(tp)
            return {"$ref": f"#/$defs/{name}"}
        raise TypeError(f"no JSON Schema mapping for {tp!r}")

    def _union(self, args: tuple[Any, ...]) -> dict[str, Any]:
        parts = [self.type_schema(a) for a in args]
        if all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
            return {"type": [p["type"] for p in parts]}
        return {"anyOf": parts}

    def object_schema(self, cls: type[Any]) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            override = _OVERRIDES.get((cls, f.name))
            properties[f.name] = override() if override else self.type_schema(hints[f.name])
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }


def schema_for(cls: type[Event]) -> dict[str, Any]:
    builder = _Builder()
    body = builder.object_schema(cls)
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + cls.TYPE,
        "title": cls.TYPE,
        "description": (cls.__doc__ or "").strip().splitlines()[0],
        **body,
    }
    if builder.defs:
        schema["$defs"] = dict(sorted(builder.defs.items()))
    return schema


def schema_files() -> dict[str, bytes]:
    """File name -> JSON text for every event type."""
    return {
        f"{cls.TYPE}.json": orjson.dumps(schema_for(cls), option=orjson.OPT_INDENT_2) + b"\n"
        for cls in EVENT_TYPES
    }


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_files().items():
        path = out / name
        path.write_bytes(text)
        written.append(path)
    return written


def committed_schema_dir() -> Path:
    return Path(__file__).parent / "schemas"
