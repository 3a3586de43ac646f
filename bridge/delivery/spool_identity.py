"""A spool belongs to the sink it was written for.

Records wait in the spool for one sink: one kind (Kafka, Redis, ...), one set of servers and
one set of destinations. Draining them into another sink (a run in the same directory with
``--sink stdout://``, another cluster, renamed topics) would acknowledge and delete them while
the consumers of the original sink never see them. So the spool directory carries the identity
of its sink (``sink.json``), and a bridge whose sink differs refuses to start while the spool
holds records, naming both sinks and the ways out. An empty spool is simply taken over.

This module only reads and writes ``sink.json``; the records are read through the spool's own
API (:class:`bridge.delivery.spool.Spool`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.delivery.spool import Spool
from bridge.errors import ConfigError

log = logging.getLogger(__name__)

IDENTITY_FILE = "sink.json"
_READ_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class SinkIdentity:
    """What makes two sinks the same for the records in a spool (never credentials)."""

    kind: str
    servers: tuple[str, ...]
    destinations: tuple[str, ...]

    @classmethod
    def of(cls, sink_url: str, destinations: Iterable[str]) -> SinkIdentity:
        parts = urlsplit(sink_url)
        kind = "redis" if parts.scheme == "rediss" else parts.scheme
        netloc = parts.netloc.rpartition("@")[2]  # never the user or password
        servers = tuple(sorted(s.strip() for s in netloc.split(",") if s.strip()))
        if kind == "redis":
            servers = tuple(f"{s}{parts.path or '/0'}" for s in servers)
        return cls(kind, servers, tuple(sorted(set(destinations))))

    def describe(self) -> str:
        where = f"{self.kind}://{','.join(self.servers)}"
        return f"{where} (destinations {', '.join(self.destinations) or '-'})"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "servers": list(self.servers), "destinations": list(self.destinations)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SinkIdentity:
        return cls(str(data["kind"]), tuple(map(str, data["servers"])), tuple(map(str, data["destinations"])))


class SpoolBelongsElsewhere(ConfigError):
    """The spool holds records for another sink: starting would deliver them to the wrong place."""


def read_identity(directory: Path) -> SinkIdentity | None:
    try:
        return SinkIdentity.from_json(json.loads((directory / IDENTITY_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"delivery.spool_dir: {directory / IDENTITY_FILE} is unreadable ({exc})"]) from exc


def write_identity(directory: Path, identity: SinkIdentity) -> None:
    path = directory / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def claim(spool: Spool, identity: SinkIdentity) -> None:
    """Make ``spool`` this sink's, or raise SpoolBelongsElsewhere if it holds another sink's records."""
    directory = spool.directory
    owner = read_identity(directory)
    if owner == identity:
        return
    if owner is not None and spool.has_unread():
        raise SpoolBelongsElsewhere([_refusal(directory, owner, identity, spool)])
    if owner is None and spool.has_unread():
        # Written before spools carried their sink's identity: nothing says whose they are.
        log.warning("spool %s holds %d bytes of records with no sink identity; treating them as %s's",
                    directory, spool.size_bytes, identity.describe())  # fmt: skip
    elif owner is not None:
        log.info("spool %s was %s's and is empty; it is now %s's",
                 directory, owner.describe(), identity.describe())  # fmt: skip
    write_identity(directory, identity)


def _refusal(directory: Path, owner: SinkIdentity, identity: SinkIdentity, spool: Spool) -> str:
    return (
        f"delivery.spool_dir: {str(directory)!r} holds {spool.size_bytes} bytes of undelivered records "
        f"written for {owner.describe()}; this run's sink is {identity.describe()}, and draining them "
        "there would lose them for the original sink's consumers. Either run once with the original sink "
        "to deliver them, or give this sink its own delivery.spool_dir; "
        f"`ibkr-bridge spool status {directory}` shows what the spool holds"
    )


@dataclass(frozen=True, slots=True)
class SpoolReport:
    directory: Path
    owner: SinkIdentity | None
    segments: int
    size_bytes: int
    by_destination: dict[str, int]
    by_type: dict[str, int]
    damage: dict[str, int]  # damaged regions found while reading, by kind
    records_lost: int  # to that damage, counted from sequence numbers

    @property
    def records(self) -> int:
        return sum(self.by_destination.values())

    def render(self) -> str:
        owner = self.owner.describe() if self.owner else "unknown (no sink.json: written by an older version)"
        lines = [
            f"spool {self.directory}: {self.records} undelivered record(s), "
            f"{self.segments} segment(s), {self.size_bytes} bytes",
            f"  belongs to   {owner}",
        ]
        width = max((len(name) for name in [*self.by_destination, *self.by_type]), default=0)
        for title, counts in (("by destination", self.by_destination), ("by type", self.by_type)):
            lines += [f"  {title}"] + [f"    {n:<{width}}  {c}" for n, c in sorted(counts.items())]
        if self.damage:
            regions = ", ".join(f"{kind} {count}" for kind, count in sorted(self.damage.items()))
            lost = f"{self.records_lost} record(s) lost"
            lines.append(f"  damage       {regions} region(s); {lost} (the log names offsets)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "sink": self.owner.to_json() if self.owner else None,
            "segments": self.segments,
            "bytes": self.size_bytes,
            "records": self.records,
            "by_destination": self.by_destination,
            "by_type": self.by_type,
            "damage": self.damage,
            "records_lost": self.records_lost,
        }


def inspect(directory: Path) -> SpoolReport:
    """What the spool at ``directory`` holds, read through the spool's API; nothing is acknowledged.

    Opening cuts a torn tail (as a starting bridge would); damage is counted, not repaired.
    """
    owner = read_identity(directory)
    spool = Spool(directory, max_bytes=1 << 62)
    destinations: Counter[str] = Counter()
    types: Counter[str] = Counter()
    try:
        while spool.has_unread():  # every read moves forward, across damage in bounded steps
            records, _ = spool.read(_READ_BATCH)
            destinations.update(r.destination for r in records)
            types.update(r.event_type for r in records)
        segments, size = spool.segment_count, spool.size_bytes
        return SpoolReport(directory, owner, segments, size, dict(destinations), dict(types),
                           dict(spool.damage_counts), spool.records_lost)  # fmt: skip
    finally:
        spool.close()
