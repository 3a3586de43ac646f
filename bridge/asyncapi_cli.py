"""``ibkr-bridge asyncapi``: the AsyncAPI 3 document for a config's destinations, to a file or stdout."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

import orjson

from bridge.asyncapi import document
from bridge.config import load_settings
from bridge.errors import ConfigError


def add_asyncapi_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "asyncapi", help="print the AsyncAPI 3 document of every destination and event",
        description="Print the AsyncAPI 3 document of what the bridge publishes: every stream and state "
        "destination as a channel, every event type as a message with its JSON Schema, key, CloudEvents "
        "headers and Kafka bindings. With --config, the destination names and topic settings of that file.",
    )
    parser.add_argument("--out", metavar="FILE", help="write it to FILE instead of standard output")
    parser.add_argument("--config", metavar="FILE", help="destination names and topics from FILE")
    parser.set_defaults(command=lambda args: write_document(args.config, args.out))


def write_document(config: str | None, out: str | None) -> int:
    """Exit status: 0, or 2 for a bad config (its problems on stderr)."""
    from bridge.app import router_for  # the composition root names the state families a config keeps

    try:
        settings = load_settings(Path(config) if config else None)
    except ConfigError as exc:
        print(f"ibkr-bridge asyncapi: {exc}", file=sys.stderr)
        return 2
    kafka = settings.sink.kafka
    doc = document(metadata.version("ibkr-bridge"), router_for(settings), kafka.topic_partitions,
                   kafka.topic_replication)  # fmt: skip
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if out:
        Path(out).write_bytes(text)
        print(f"wrote the AsyncAPI document to {out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(text)
    return 0
