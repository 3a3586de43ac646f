"""SIGKILL a process while it appends to the spool; reopening replays every complete entry.

The writer appends entries of up to a few MiB, so the kill usually lands inside a
``write()`` and leaves a torn last entry behind. Whatever the timing, the reopened
spool must hold exactly the entries 0..k-1, intact, with k at least the number the
writer had seen acknowledged, and must accept new appends after them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.delivery.spool import SEGMENT_SUFFIX, Spool
from bridge.events import EventClass
from bridge.sinks.base import Record

WRITER = textwrap.dedent(
    """
    import sys
    from bridge.delivery.spool import Spool
    from bridge.events import EventClass
    from bridge.sinks.base import Record

    spool = Spool(sys.argv[1], max_bytes=1 << 40, segment_bytes=8 << 20, fsync=sys.argv[2])
    n = 0
    while True:
        size = (n * 7919) % (3 << 20)
        spool.append([Record("ibkr.orders.v1", b"k", (b"%08d" % n) * (size // 8 + 1), (("id", str(n)),),
                             EventClass.CRITICAL, "com.ibkr.orders.order.v1", n)])
        print(n, flush=True)
        n += 1
    """
)


def expected_data(n: int) -> bytes:
    size = (n * 7919) % (3 << 20)
    return (b"%08d" % n) * (size // 8 + 1)


def spool_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob(f"*{SEGMENT_SUFFIX}"))


def kill_while_growing(writer: subprocess.Popen[bytes], directory: Path) -> None:
    """SIGKILL as soon as the next entry starts reaching the disk (likely mid-write)."""
    size = spool_bytes(directory)
    for _ in range(1_000_000):
        if spool_bytes(directory) > size or writer.poll() is not None:
            break
    writer.send_signal(signal.SIGKILL)


@pytest.mark.parametrize("fsync", ["never", "interval_ms"])
def test_a_spool_killed_mid_write_replays_every_complete_entry(tmp_path: Path, fsync: str) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), fsync],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert writer.stdout is not None
    acknowledged = -1
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= 40 and (acknowledged * 7919) % (3 << 20) > (1 << 20):
            break
    kill_while_growing(writer, tmp_path)
    writer.wait(timeout=30)
    writer.stdout.close()
    assert acknowledged >= 40, "the writer died before appending anything"

    size_on_disk = spool_bytes(tmp_path)
    spool = Spool(tmp_path, max_bytes=1 << 40, segment_bytes=8 << 20)
    replayed: list[Record] = []
    while spool.has_unread():
        chunk, _ = spool.read(16)
        replayed.extend(chunk)
    assert [r.id for r in replayed] == [str(n) for n in range(len(replayed))]
    assert len(replayed) > acknowledged
    assert all(r.data == expected_data(n) and r.updated_ms == n for n, r in enumerate(replayed))
    assert spool_bytes(tmp_path) <= size_on_disk  # a torn tail, if any, was cut off

    after = Record("ibkr.orders.v1", b"k", b"{}", (("id", "after"),), EventClass.CRITICAL, "t", None)
    spool.append([after])
    chunk, _ = spool.read(10)
    assert [r.id for r in chunk] == ["after"]
