"""The on-disk spool: framing, replay in order, acknowledged segments, torn tails, quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.delivery.spool import (
    ENTRY_HEADER,
    SEGMENT_SUFFIX,
    Spool,
    SpoolCorrupt,
    decode_record,
    encode_record,
    frame,
)
from bridge.events import EventClass
from bridge.sinks.base import Record


def order_record(n: int, key: bytes = b"42", size: int = 40) -> Record:
    return Record(
        destination="ibkr.orders.v1",
        key=key,
        data=b'{"n":%d,"pad":"%s"}' % (n, b"x" * size),
        attributes=(("id", f"order-{n}"), ("sequence", n), ("type", "com.ibkr.orders.order.v1")),
        event_class=EventClass.CRITICAL,
        event_type="com.ibkr.orders.order.v1",
        updated_ms=1_700_000_000_000 + n,
    )


def ids(records: list[Record]) -> list[str]:
    return [r.id for r in records]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))


def read_all(spool: Spool) -> list[Record]:
    records, _ = spool.read(1_000_000)
    return records


def test_a_record_survives_encoding_with_every_field_intact() -> None:
    record = Record(
        destination="ibkr.bridge.v1",
        key=b"\x00\xffkey",
        data=b'{"kind":"gap_start"}',
        attributes=(("id", "x"), ("sessionepoch", 3)),
        event_class=EventClass.INTERNAL,
        event_type="com.ibkr.bridge.lifecycle.v1",
        updated_ms=None,
    )
    assert decode_record(encode_record(record)) == record
    assert decode_record(encode_record(order_record(7))) == order_record(7)


def test_a_payload_with_inconsistent_lengths_is_reported_as_corrupt() -> None:
    payload = encode_record(order_record(1))
    with pytest.raises(SpoolCorrupt):
        decode_record(payload[:-3])


@pytest.mark.parametrize("fsync", ["always", "interval_ms", "never"])
def test_records_are_read_back_in_append_order_with_each_fsync_policy(tmp_path: Path, fsync: str) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=300, fsync=fsync)  # type: ignore[arg-type]
    spool.append([order_record(n) for n in range(10)])
    spool.append([order_record(n) for n in range(10, 15)])
    assert ids(read_all(spool)) == [f"order-{n}" for n in range(15)]
    assert spool.segment_count > 1
    assert not spool.has_unread()


def test_an_unknown_fsync_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="fsync"):
        Spool("/nonexistent-never-created", max_bytes=1, fsync="sometimes")  # type: ignore[arg-type]


def test_reading_in_small_steps_returns_each_record_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=250)
    spool.append([order_record(n) for n in range(9)])
    seen: list[Record] = []
    while spool.has_unread():
        chunk, _ = spool.read(2)
        assert 0 < len(chunk) <= 2
        seen.extend(chunk)
    assert ids(seen) == [f"order-{n}" for n in range(9)]


def test_unacknowledged_records_are_replayed_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=250)
    spool.append([order_record(n) for n in range(10)])
    first, position = spool.read(4)
    spool.commit(position)
    spool.read(3)  # read but never acknowledged: must come back
    spool.close()

    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=250)
    assert ids(first) == [f"order-{n}" for n in range(4)]
    assert ids(read_all(reopened)) == [f"order-{n}" for n in range(4, 10)]


def test_records_appended_after_a_restart_come_after_the_replayed_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([order_record(n) for n in range(3)])
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    reopened.append([order_record(n) for n in range(3, 5)])
    assert ids(read_all(reopened)) == [f"order-{n}" for n in range(5)]


def test_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=250)
    spool.append([order_record(n) for n in range(12)])
    count_before = len(segments(tmp_path))
    size_before = spool.size_bytes
    _, position = spool.read(8)
    spool.commit(position)
    assert len(segments(tmp_path)) < count_before
    assert spool.size_bytes < size_before
    _, position = spool.read(100)
    spool.commit(position)
    assert segments(tmp_path) == []
    assert spool.size_bytes == 0


def test_a_fully_acknowledged_spool_stays_empty_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([order_record(n) for n in range(3)])
    _, position = spool.read(10)
    spool.commit(position)
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert not reopened.has_unread()
    reopened.append([order_record(9)])
    assert ids(read_all(reopened)) == ["order-9"]


def test_a_torn_tail_is_truncated_and_every_complete_entry_is_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([order_record(n) for n in range(5)])
    spool.close()
    (segment,) = segments(tmp_path)
    whole = segment.stat().st_size
    torn = frame(encode_record(order_record(5)), 5)
    with segment.open("ab") as handle:
        handle.write(torn[: len(torn) // 2])  # the crash hit mid-write

    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert segment.stat().st_size == whole
    reopened.append([order_record(6)])
    assert ids(read_all(reopened)) == [f"order-{n}" for n in (0, 1, 2, 3, 4, 6)]


def test_a_torn_header_is_truncated_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([order_record(n) for n in range(2)])
    spool.close()
    (segment,) = segments(tmp_path)
    with segment.open("ab") as handle:
        handle.write(frame(encode_record(order_record(2)), 2)[:5])
    assert ids(read_all(Spool(tmp_path, max_bytes=1 << 20))) == ["order-0", "order-1"]


def test_a_flipped_byte_in_an_older_segment_costs_only_the_entry_it_hit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=250)
    spool.append([order_record(n) for n in range(9)])
    spool.close()
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[ENTRY_HEADER.size + 10] ^= 0xFF  # inside the first entry's payload
    first.write_bytes(bytes(data))

    replayed = ids(read_all(Spool(tmp_path, max_bytes=1 << 20, segment_bytes=250)))
    assert replayed == [f"order-{n}" for n in range(1, 9)]


def test_the_quota_is_reported_once_reached_and_appends_still_succeed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=500, segment_bytes=200)
    while spool.has_room():
        spool.append([order_record(0)])
    assert spool.size_bytes >= 500
    spool.append([order_record(1)])  # a shutdown may always persist what it holds
    _, position = spool.read(1_000)
    assert spool.size_bytes > 500
    spool.commit(position)
    assert spool.has_room()
    assert spool.size_bytes == 0


def test_a_failed_append_leaves_no_partial_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=250)
    spool.append([order_record(0)])
    calls = 0
    real_encode = encode_record

    def failing_encode(record: Record) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise OSError(28, "No space left on device")
        return real_encode(record)

    monkeypatch.setattr("bridge.delivery.spool.encode_record", failing_encode)
    with pytest.raises(OSError):
        spool.append([order_record(n) for n in range(1, 10)])
    monkeypatch.undo()
    spool.append([order_record(99)])
    spool.close()
    assert ids(read_all(Spool(tmp_path, max_bytes=1 << 20))) == ["order-0", "order-99"]


def test_interval_fsync_syncs_once_the_interval_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("bridge.delivery.spool.os.fsync", counting_fsync)
    spool = Spool(
        tmp_path, max_bytes=1 << 20, fsync="interval_ms", fsync_interval_ms=100, clock=lambda: now[0]
    )
    spool.append([order_record(0)])
    assert synced == []
    now[0] = 0.2
    spool.append([order_record(1)])
    assert len(synced) == 1
    spool.append([order_record(2)])
    now[0] = 0.25
    spool.sync_if_due()
    assert len(synced) == 1
    now[0] = 0.4
    spool.sync_if_due()  # nothing new appended, but the last record is still unsynced
    spool.sync_if_due()
    assert len(synced) == 2


def test_a_stray_file_in_the_spool_directory_does_not_stop_the_spool_from_opening(tmp_path: Path) -> None:
    (tmp_path / "notes.seg").write_text("not a segment")
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert not spool.has_unread()
    spool.close()
