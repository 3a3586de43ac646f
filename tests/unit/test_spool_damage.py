"""A damaged spool on real files costs only the damaged entries, and says so once per region.

Each variant writes an inventory of 3,000 records into about 60 segments (300 of them
acknowledged), damages the files, reopens the spool as a restarted bridge does and drains it:
the records that do not come back must be exactly the ones whose entries were damaged, every
damaged region must be reported once with the records it cost (counted from sequence numbers),
and a second restart must find nothing left to report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import jsonschema
import orjson
import pytest

from bridge.codec import EnvelopeContext, encode
from bridge.delivery.spool import Spool
from bridge.events import LifecycleKind
from bridge.metrics import BridgeMetrics
from bridge.routing import Router
from bridge.schemagen import schema_files
from bridge.spool_damage import SpoolDamageReporter
from tests.fixtures.spool_damage import (
    VARIANTS,
    build,
    frame_v1,
    inventory_record,
    number,
    path_of,
    restart,
    segment_files,
)

RECORDS, SEGMENT_BYTES, ACKNOWLEDGED = 3_000, 32 << 10, 300
EXPECTED_REGIONS = {  # a region is a run of damaged bytes, a missing segment, a copied run...
    "zeroed region": 1, "zeroed segment": 1, "flipped bytes mid-segment": 3,
    "flipped byte in the last segment": 1, "torn final entry": 0, "deleted middle segment": 1,
    "truncated middle segment": 1, "garbage inserted mid-segment": 1, "garbage appended to the last segment": 1,
    "length field past the end": 1, "duplicated region": 1, "corrupted commit file": 1,
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_damage_costs_only_the_damaged_entries_and_is_reported_once(tmp_path: Path, variant: str) -> None:
    placed = build(tmp_path, RECORDS, SEGMENT_BYTES, ACKNOWLEDGED)
    damaged = VARIANTS[variant](tmp_path, placed)

    outcome = restart(tmp_path, SEGMENT_BYTES, damaged, [p.n for p in placed])

    assert outcome.lost == damaged
    survivors = [n for n in outcome.replayed if n >= ACKNOWLEDGED]
    assert survivors == [n for n in outcome.expected if n not in damaged]  # in order, each once
    assert len(outcome.reports) == EXPECTED_REGIONS[variant], outcome.reports
    counted = [r for r in outcome.reports if r.records_lost is not None]
    if variant not in ("garbage appended to the last segment",):
        assert len(counted) == len(outcome.reports)  # every count exact, from sequence numbers
    torn = variant == "torn final entry"  # a crash's incomplete last entry: cut off, not damage
    assert outcome.reported_lost == (0 if torn else len(damaged))
    again = restart(tmp_path, SEGMENT_BYTES, set(), [])
    assert again.reports == [] and again.replayed == []


def test_a_bad_entry_in_the_last_segment_is_damage_not_a_torn_tail_and_nothing_intact_is_cut(
    tmp_path: Path,
) -> None:
    placed = build(tmp_path, 400, 1 << 20, 0)
    (segment,) = segment_files(tmp_path)
    size = segment.stat().st_size
    hit = placed[100]
    data = bytearray(segment.read_bytes())
    data[hit.offset + 30] ^= 0x01
    segment.write_bytes(bytes(data))

    reports: list[object] = []
    spool = Spool(tmp_path, max_bytes=1 << 30, segment_bytes=1 << 20, on_damage=reports.append)
    assert segment.stat().st_size == size  # the 299 intact entries after it stay on disk
    spool.append([inventory_record(400)])
    replayed: list[int] = []
    while spool.has_unread():
        replayed += [number(r) for r in spool.read(1_000)[0]]
    assert replayed == [n for n in range(401) if n != 100]
    assert len(reports) == 1


def test_a_zeroed_16_mib_segment_is_one_report_crossed_in_bounded_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment_bytes = 16 << 20
    placed = build(tmp_path, 60_000, segment_bytes, 0)
    segments = sorted({p.segment for p in placed})
    assert len(segments) >= 3
    zeroed = path_of(tmp_path, segments[1])
    zeroed.write_bytes(b"\0" * zeroed.stat().st_size)
    lost = {p.n for p in placed if p.segment == segments[1]}

    with caplog.at_level(logging.INFO):
        outcome = restart(tmp_path, segment_bytes, lost, [p.n for p in placed])
    assert outcome.lost == lost and len(lost) > 20_000
    assert [(r.kind, r.segment, r.offset, r.records_lost) for r in outcome.reports] == [
        ("corrupt", segments[1], 0, len(lost))
    ]
    damage_lines = [r for r in caplog.records if "spool damage" in r.getMessage()]
    assert len(damage_lines) == 1 and not any(r.exc_info for r in caplog.records)
    assert outcome.reads >= 4  # the 16 MiB were searched over several bounded reads, not in one


def test_one_read_across_a_zeroed_16_mib_segment_takes_milliseconds_not_seconds(tmp_path: Path) -> None:
    placed = build(tmp_path, 60_000, 16 << 20, 0)
    segments = sorted({p.segment for p in placed})
    zeroed = path_of(tmp_path, segments[0])
    zeroed.write_bytes(b"\0" * zeroed.stat().st_size)
    spool = Spool(tmp_path, max_bytes=1 << 40, segment_bytes=16 << 20)
    slowest = 0.0
    while spool.has_unread():
        started = time.perf_counter()
        spool.read(1_000)
        slowest = max(slowest, time.perf_counter() - started)
    spool.close()
    assert slowest < 0.5  # a generous bound on a loaded machine; measured ~3-6 ms per read


def test_a_segment_in_the_previous_format_is_drained_after_an_upgrade(tmp_path: Path) -> None:
    old = path_of(tmp_path, 1)
    old.write_bytes(b"".join(frame_v1(inventory_record(n)) for n in range(50)))
    (tmp_path / "committed").write_text("1 0\n")  # the previous format's commit file
    spool = Spool(tmp_path, max_bytes=1 << 30)
    spool.append([inventory_record(n) for n in range(50, 60)])  # goes to a new segment
    assert len(segment_files(tmp_path)) == 2
    replayed: list[int] = []
    while spool.has_unread():
        records, position = spool.read(7)
        replayed += [number(r) for r in records]
        spool.commit(position)
    assert replayed == list(range(60))
    assert segment_files(tmp_path) == []


def test_a_zeroed_region_in_a_previous_format_segment_is_one_report(tmp_path: Path) -> None:
    first, second = path_of(tmp_path, 1), path_of(tmp_path, 2)
    first.write_bytes(b"".join(frame_v1(inventory_record(n)) for n in range(40)))
    second.write_bytes(b"".join(frame_v1(inventory_record(n)) for n in range(40, 50)))
    data = bytearray(first.read_bytes())
    data[2000:2000 + 8000] = bytes(8000)  # the previous format zeroed: one traceback per 8 bytes before
    first.write_bytes(bytes(data))
    outcome = restart(tmp_path, 16 << 20, set(), [])
    assert len(outcome.reports) == 1 and outcome.reports[0].kind == "corrupt"
    assert outcome.replayed[0] == 0 and outcome.replayed[-10:] == list(range(40, 50))


async def test_each_region_is_a_metric_at_once_and_a_lifecycle_event_that_validates(tmp_path: Path) -> None:
    placed = build(tmp_path, 600, 16 << 10, 0)
    deleted = {p.n for p in placed if p.segment == 3}
    path_of(tmp_path, 3).unlink()
    metrics = BridgeMetrics()
    reporter = SpoolDamageReporter(metrics)
    spool = Spool(tmp_path, max_bytes=1 << 30, segment_bytes=16 << 10, on_damage=reporter)
    while spool.has_unread():
        spool.read(1_000)
    exposition = metrics.render().decode()
    assert 'ibkr_bridge_spool_damaged_regions_total{kind="missing_segment"} 1.0' in exposition
    assert f"ibkr_bridge_spool_records_lost_total {float(len(deleted))}" in exposition

    router, emitted = Router(), []
    reporter.connect(emitted.extend)  # the waiting report first; later ones from the loop
    (event,) = emitted
    route = router.route(event)
    assert route is not None and route.destination == "ibkr.bridge.v1"
    record = encode(event, route, EnvelopeContext(), 0)
    data = orjson.loads(record.data)
    schema = orjson.loads(schema_files()["com.ibkr.bridge.lifecycle.v1.json"])
    jsonschema.validate(data, schema)
    assert data["kind"] == "spool_damaged" and data["reason"] == "missing_segment"
    assert data["detail"] == {"segment": 3, "offset": 0, "bytes": 0, "records_lost": len(deleted),
                              "missing_segments": 1, "duplicates": 0}  # fmt: skip

    path_of(tmp_path, 5).write_bytes(b"\0" * 100)  # a later region, reported while the loop runs
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 30, segment_bytes=16 << 10, on_damage=reporter)
    while reopened.has_unread():
        reopened.read(1_000)
    await asyncio.sleep(0)
    assert len(emitted) >= 2 and all(e.kind is LifecycleKind.SPOOL_DAMAGED for e in emitted)
