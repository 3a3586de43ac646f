"""Critical records held in memory when the spool's disk is full at shutdown: the loss is counted
and logged once with the ids, never an exception out of the drain. A real 2 MiB tmpfs."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.delivery.buffer import DeliveryBuffer
from bridge.delivery.spool import Spool
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
