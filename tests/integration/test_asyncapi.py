"""``ibkr-bridge asyncapi``: valid against the official AsyncAPI 3.0.0 JSON Schema (npm package
``@asyncapi/specs``, installed from examples/node's lockfile) and complete: every destination the
bridge can write is a channel carrying the messages routed there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from bridge.asyncapi import TOMBSTONE
from bridge.events import EVENT_TYPES, EventClass
from bridge.routing import Router
from bridge.schemagen import schema_for


def asyncapi_validator(node_packages: Path) -> jsonschema.Draft7Validator:
    spec = json.loads((node_packages / "@asyncapi" / "specs" / "schemas" / "3.0.0.json").read_text())
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(schema, default_specification=DRAFT7))
        for uri, schema in spec["definitions"].items()
    )
    return jsonschema.Draft7Validator(spec, registry=registry)


def generate(*args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "asyncapi", *args], capture_output=True,
                            check=True)  # fmt: skip
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def validator(node_packages: Path) -> jsonschema.Draft7Validator:
    return asyncapi_validator(node_packages)


def test_the_asyncapi_document_is_valid_asyncapi_3(validator: jsonschema.Draft7Validator) -> None:
    document = generate()
    assert document["asyncapi"] == "3.0.0"
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_the_validator_refuses_a_broken_document(validator: jsonschema.Draft7Validator) -> None:
    document = generate()
    channel = next(iter(document["channels"].values()))
    channel["bindings"]["kafka"]["partitions"] = "six"  # the Kafka binding wants an integer
    assert not validator.is_valid(document)
    assert not validator.is_valid(generate() | {"info": {"title": "no version"}})


def test_the_asyncapi_document_names_every_destination_the_bridge_can_write() -> None:
    document = generate()
    router = Router()
    addresses = {channel["address"]: channel for channel in document["channels"].values()}
    expected = {*router.static_destinations(), *router.state_destinations().values()}
    assert set(addresses) == expected
    for cls in EVENT_TYPES:
        if cls.CLASS is EventClass.INTERNAL:
            assert cls.TYPE not in document["components"]["messages"]
            continue
        channel = addresses[router.destination_of(cls.FAMILY)]
        assert cls.TYPE in channel["messages"]
        message = document["components"]["messages"][cls.TYPE]
        assert message["payload"]["schema"] == schema_for(cls)  # the very schema `ibkr-bridge schemas` ships
        assert message["headers"]["properties"]["ce_type"]["const"] == cls.TYPE
        assert {"ce_id", "ce_source", "ce_time", "ce_sessionepoch", "ce_sequence"} <= set(message["headers"]["required"])
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
    state = addresses["ibkr.state.orders.v1"]
    assert state["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["compact"]
    assert set(state["messages"]) == {"com.ibkr.orders.order.v1", TOMBSTONE}
    assert addresses["ibkr.orders.v1"]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["delete"]
    operations = {op["channel"]["$ref"].rsplit("/", 1)[1] for op in document["operations"].values()}
    assert operations == set(document["channels"])


def test_the_document_follows_the_configured_destination_names(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "destinations": {"marketdata": "desk.quotes", "state.marketdata": "desk.quotes.latest"},
        "state": {"orders": False},
        "sink": {"kafka": {"topic_partitions": 12}},
    }))  # fmt: skip
    out = tmp_path / "asyncapi.json"
    subprocess.run([sys.executable, "-m", "bridge.cli", "asyncapi", "--config", str(config), "--out", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    document = json.loads(out.read_text())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"desk.quotes", "desk.quotes.latest"} <= addresses
    assert "ibkr.state.orders.v1" not in addresses and "ibkr.marketdata.v1" not in addresses
    assert {c["bindings"]["kafka"]["partitions"] for c in document["channels"].values()} == {12}
