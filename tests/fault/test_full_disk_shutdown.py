"""Critical records the spool's disk refuses are held in memory and written again until the drain
deadline. A disk freed in time gets every one of them; a disk still full at shutdown loses them:
counted and logged once with the ids, never an exception out of the drain. A real 2 MiB tmpfs."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.delivery.buffer import RETRY_WRITE_S, DeliveryBuffer
from bridge.delivery.spool import Spool
from bridge.publisher import Publisher
from bridge.sinks.memory import MemorySink
from tests.unit.test_buffer import order


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_at_shutdown_counts_and_names_the_lost_critical_records(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (small_disk / "filler").write_bytes(b"\0" * (1900 << 10))  # the disk is nearly full already
    spool = Spool(small_disk / "spool", max_bytes=1 << 30, segment_bytes=1 << 20, fsync="always")
    buffer = DeliveryBuffer(max_market_events=10, max_critical_events=10_000, spool=spool)
    records = [order(n, key=n) for n in range(2_000)]
    for record in records:
        record.data = record.data + b" " * 400  # ~0.5 KB each: 1 MB in all, more than the disk holds
    buffer.put_many(records)
    with caplog.at_level(logging.ERROR):
        saved = buffer.close()  # raised OSError (ENOSPC) before
    spool.close()
    assert saved == 0 and buffer.lost_critical_events == 2_000
    (line,) = [r.getMessage() for r in caplog.records if "LOST" in r.getMessage()]
    assert "2000 critical records are LOST" in line and "No space left on device" in line
    first_id = dict(records[0].attributes)["id"]
    assert str(first_id) in line


def spooled_ids(directory: Path) -> list[str]:
    spool = Spool(directory, max_bytes=1 << 30, segment_bytes=1 << 20)
    ids: list[str] = []
    try:
        while spool.has_unread():
            records, _ = spool.read(500)
            ids += [record.id for record in records]
    finally:
        spool.close()
    return ids


@pytest.mark.parametrize("freed", ["while_running", "during_the_drain"])
async def test_a_disk_freed_before_the_drain_deadline_gets_every_held_critical_record(
    small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, freed: str
) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1900 << 10))
    spool = Spool(small_disk / "spool", max_bytes=1 << 30, segment_bytes=1 << 20, fsync="always")
    buffer = DeliveryBuffer(max_market_events=10, max_critical_events=10_000, spool=spool)
    sink = MemorySink()
    sink.down = True  # the broker is down too: nothing leaves through the sink
    publisher = Publisher(sink, buffer, max_batch_events=100, linger_ms=0, delays=lambda attempt: 0.05)
    publisher.start()
    records = [order(n, key=n % 7) for n in range(2_000)]
    for record in records:
        record.data = record.data + b" " * 400  # ~0.5 KB each: 1 MB in all, more than the disk holds
    with caplog.at_level(logging.WARNING):
        for start in range(0, len(records), 50):  # the gateway reader, a frame's worth at a time
            buffer.put_many(records[start : start + 50])
            await asyncio.sleep(0)
        assert buffer.spooled_events < 2_000  # the disk refused the rest: held in memory
        if freed == "while_running":
            filler.unlink()  # an operator frees the disk
            await asyncio.sleep(2 * RETRY_WRITE_S + 0.5)
            # Still running, broker still down: a SIGKILL now would find every record on disk.
            shutil.copytree(small_disk / "spool", tmp_path / "copy")
            assert spooled_ids(tmp_path / "copy") == [str(dict(r.attributes)["id"]) for r in records]
        else:
            asyncio.get_running_loop().call_later(1.0, filler.unlink)  # SIGTERM came first
        delivered = await publisher.drain(timeout_s=3.0)
    spool.close()
    ids = [str(dict(r.attributes)["id"]) for r in records]
    assert not delivered and buffer.lost_critical_events == 0
    assert not [r for r in caplog.records if "LOST" in r.getMessage()]
    assert [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()][:1]
    assert spooled_ids(small_disk / "spool") == ids


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses another byte."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_commit_a_full_disk_refused_is_made_by_a_later_acknowledgement(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    spool = Spool(small_disk / "spool", max_bytes=1 << 30, segment_bytes=1 << 20, fsync="always")
    buffer = DeliveryBuffer(max_critical_events=100, spool=spool, clock=lambda: now[0])
    buffer.put_many([order(n) for n in range(3)])
    filler = fill(small_disk)
    with caplog.at_level(logging.WARNING):
        buffer.ack(buffer.take(10))  # everything acknowledged, but the commit file cannot be written
        for n in range(5):  # the disk stays full: later commits fail too, and are not logged again
            now[0] += 1.0
            buffer.put(order(100 + n))
            buffer.ack(buffer.take(10))
    assert sum("cannot be committed yet" in r.getMessage() for r in caplog.records) == 1
    assert sum(r.levelno >= logging.ERROR for r in caplog.records) == 0, [r.getMessage() for r in caplog.records]
    filler.unlink()
    now[0] += 1.0
    buffer.put(order(3))
    buffer.ack(buffer.take(10))
    assert buffer.close() == 0
    spool.close()
    assert spooled_ids(small_disk / "spool") == []  # nothing to replay: every record was committed
