"""The AsyncAPI 3 document of what the bridge publishes (pure).

Built from the same event types and JSON Schemas as ``ibkr-bridge schemas``: every destination
the bridge can write (each stream, each state destination) is a channel; every published event
type is a message with its payload schema (draft 2020-12, embedded as a multi-format schema), its
key, the CloudEvents Kafka binary-mode headers, and the Kafka bindings (topic configuration, key
schema). Channel addresses follow the router's destination templates, so a document generated
with a config file names the topics that config writes.
"""

from __future__ import annotations

from typing import Any

from bridge.events import EVENT_TYPES, Event, EventClass, Order, Quote
from bridge.routing import STATE_FAMILIES, Router
from bridge.schemagen import schema_for

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
PAYLOAD_FORMAT = "application/schema+json;version=draft-2020-12"
TOMBSTONE = "com.ibkr.state.tombstone"  # message id of a state record without data

_KEYS: dict[str, str] = {
    "marketdata": "conid (a combo, whose conid is 0, by its conidEx)",
    "book": "conid",
    "bars": "conid",
    "orders": "orderId",
    "executions": "orderId (the execution id when the gateway gives no order id)",
    "pnl": "account alias (the account id unless account_aliases maps it)",
    "account": "account alias (the account id unless account_aliases maps it)",
    "notifications": "notification id",
    "bridge": "the constant 'gateway', so lifecycle events stay in one order",
    "dlq": "the topic or event type of what could not be handled",
}

_DIGITS = "^[0-9]+$"
_NO_DATA = ("content-type", "ce_dataschema")  # headers a record without data does not carry
_HEADERS: dict[str, dict[str, Any]] = {
    "ce_specversion": {"type": "string", "const": "1.0"},
    "ce_id": {"type": "string", "description": "deterministic from content: deduplicate by it"},
    "ce_source": {"type": "string", "description": "urn:ibkr-bridge:<instance>"},
    "ce_type": {"type": "string"},
    "ce_subject": {"type": "string", "description": "the record key as text"},
    "ce_time": {"type": "string", "format": "date-time"},
    "content-type": {"type": "string", "const": "application/json"},
    "ce_dataschema": {"type": "string"},
    "ce_sessionepoch": {"type": "string", "pattern": _DIGITS, "description": "+1 per gateway session"},
    "ce_sequence": {"type": "string", "pattern": _DIGITS, "description": "publish order"},
}


def published_types() -> list[type[Event]]:
    """The event types the bridge writes (internal ones never leave it)."""
    return [cls for cls in EVENT_TYPES if cls.CLASS is not EventClass.INTERNAL]


def destinations(router: Router) -> dict[str, list[str]]:
    """Destination -> message ids written there: every stream, then every state destination."""
    written: dict[str, list[str]] = {}
    for cls in published_types():
        written.setdefault(router.destination_of(cls.FAMILY), []).append(cls.TYPE)
    state_of = router.state_destinations()
    for family in STATE_FAMILIES:
        stream = router.destination_of(family)
        if stream in state_of:
            written[state_of[stream]] = [*written[stream], TOMBSTONE]
    return written


def _headers(cls_type: str, with_data: bool) -> dict[str, Any]:
    names = [name for name in _HEADERS if with_data or name not in _NO_DATA]
    properties = {name: dict(_HEADERS[name]) for name in names}
    properties["ce_type"] = {"type": "string", "const": cls_type}
    return {"type": "object", "properties": properties, "required": names}


def _headers_without_data() -> dict[str, Any]:
    headers = _headers("", with_data=False)
    headers["properties"]["ce_type"] = {"type": "string", "enum": [Quote.TYPE, Order.TYPE]}
    return headers


def _message(cls: type[Event], family: str) -> dict[str, Any]:
    schema = schema_for(cls)
    return {
        "name": cls.TYPE,
        "title": cls.__name__,
        "summary": schema["description"],
        "contentType": "application/json",
        "headers": _headers(cls.TYPE, with_data=True),
        "payload": {"schemaFormat": PAYLOAD_FORMAT, "schema": schema},
        "correlationId": {"description": "the record key", "location": "$message.header#/ce_subject"},
        "bindings": {"kafka": {"key": {"type": "string", "description": _KEYS[family]},
                               "bindingVersion": KAFKA_BINDING_VERSION}},
    }  # fmt: skip


def _tombstone() -> dict[str, Any]:
    return {
        "name": TOMBSTONE,
        "title": "Tombstone",
        "summary": "A key leaves the state (a finished order, an unsubscribed conid): a record without data.",
        "description": "Kafka: a null value (CloudEvents binary mode, no data), which compaction treats as "
        "a delete of the key; ce_type is the type of the state's events. Redis: the hash field is deleted "
        "(HDEL); nothing is added to a stream.",
        "headers": _headers_without_data(),
        "payload": {"type": "null"},
        "bindings": {"kafka": {"key": {"type": "string", "description": "the key of the state it removes"},
                               "bindingVersion": KAFKA_BINDING_VERSION}},
    }  # fmt: skip


def _channel_id(destination: str) -> str:
    return destination.replace("{", "").replace("}", "")


def _channel(
    destination: str, messages: list[str], state_of: str | None, partitions: int, replicas: int
) -> dict[str, Any]:
    """``state_of``: the stream whose state this destination keeps (None for a stream)."""
    state = state_of is not None
    policy = "compact" if state else "delete"
    description = (
        "State: the latest event per key (Kafka: compacted topic; Redis: hash, field = key, value = "
        '{"entry": <stream entry id>, "event": <structured CloudEvent>}).'
        if state else "Stream: every event in order per key (Kafka: topic; Redis: stream, the CloudEvents "
        "attributes as entry fields beside key and data)."
    )  # fmt: skip
    extension = {"x-state-of": state_of} if state_of is not None else {}
    return {
        "address": destination,
        "description": description,
        **extension,
        "messages": {message: {"$ref": f"#/components/messages/{message}"} for message in messages},
        "bindings": {"kafka": {
            "topic": destination,
            "partitions": partitions,
            "replicas": replicas,
            "topicConfiguration": {"cleanup.policy": [policy]},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }},
    }  # fmt: skip


def document(
    version: str, router: Router | None = None, partitions: int = 6, replicas: int = 1
) -> dict[str, Any]:
    """The AsyncAPI 3 document (``version``: the bridge's) for ``router``'s destinations."""
    router = router or Router()
    written = destinations(router)
    stream_of = {state: stream for stream, state in router.state_destinations().items()}
    channels = {
        _channel_id(d): _channel(d, m, stream_of.get(d), partitions, replicas) for d, m in written.items()
    }
    messages: dict[str, Any] = {cls.TYPE: _message(cls, cls.FAMILY) for cls in published_types()}
    if any(TOMBSTONE in m for m in written.values()):
        messages[TOMBSTONE] = _tombstone()
    operations = {
        f"publish.{channel_id}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in channel["messages"]],
        }
        for channel_id, channel in channels.items()
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ibkr-bridge",
            "version": version,
            "description": "Interactive Brokers Client Portal Gateway events as typed, versioned CloudEvents "
            "on Kafka topics (binary mode: ce_* headers, value = data) or Redis Streams.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {"host": "localhost:9092", "protocol": "kafka", "description": "sink.url kafka://..."},
            "redis": {"host": "localhost:6379", "protocol": "redis", "description": "sink.url redis://..."},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
