"""The committed JSON Schemas match the dataclasses, and real events validate against them."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from bridge.cli import main
from bridge.events import EVENT_TYPES
from bridge.schemagen import committed_schema_dir, schema_files

GOLDEN = Path(__file__).parents[1] / "data" / "golden"


def test_committed_schemas_match_the_event_dataclasses() -> None:
    committed = {p.name: p.read_bytes() for p in committed_schema_dir().glob("*.json")}
    generated = schema_files()
    assert sorted(committed) == sorted(generated), "schema files added or removed: regenerate bridge/schemas"
    drifted = [name for name, text in generated.items() if committed[name] != text]
    assert not drifted, f"dataclass and schema drifted for {drifted}: run ibkr-bridge schemas --out bridge/schemas"


def test_every_schema_is_closed_and_requires_every_field() -> None:
    for name, text in schema_files().items():
        schema = orjson.loads(text)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False, name
        assert set(schema["required"]) == set(schema["properties"]), name


def golden_envelopes() -> list[dict[str, object]]:
    return [event for path in sorted(GOLDEN.glob("*.jsonl")) for line in path.read_bytes().splitlines()
            for event in orjson.loads(line)]  # fmt: skip


def test_every_golden_event_validates_against_the_schema_of_its_type() -> None:
    schemas = {orjson.loads(text)["title"]: orjson.loads(text) for text in schema_files().values()}
    seen = set()
    for envelope in golden_envelopes():
        event_type = envelope["type"]
        assert isinstance(event_type, str)
        jsonschema.validate(envelope["data"], schemas[event_type])
        seen.add(event_type)
    assert len(seen) >= len(EVENT_TYPES) - 1  # all but lifecycle, which the session emits


def test_a_schema_rejects_an_unknown_field() -> None:
    schema = orjson.loads(schema_files()["com.ibkr.orders.order.v1.json"])
    order = next(e["data"] for e in golden_envelopes() if e["type"] == "com.ibkr.orders.order.v1")
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        jsonschema.validate({**order, "surprise": 1}, schema)  # type: ignore[dict-item]


def test_schemas_command_exports_one_file_per_event_type(tmp_path: Path) -> None:
    assert main(["schemas", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.json"))) == len(EVENT_TYPES)
