"""A spool written for one sink is never drained into another, and ``spool status`` shows it.

The scenario: a run with ``--sink kafka://...`` against an unreachable broker leaves order and
execution records in ``./spool``; the next run in the same directory with ``--sink stdout://``
must not print and drop them. It refuses to start (exit 2), naming both sinks and the way out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.delivery.spool import Spool
from bridge.delivery.spool_identity import SinkIdentity, SpoolBelongsElsewhere, claim, read_identity
from bridge.events import EventClass
from bridge.routing import DEFAULT_DESTINATIONS
from bridge.sinks.base import Record

SCRIPT = Path(sys.executable).with_name("ibkr-bridge")
KAFKA = SinkIdentity.of("kafka://127.0.0.1:9,127.0.0.1:8", DEFAULT_DESTINATIONS.values())
STDOUT = SinkIdentity.of("stdout://", DEFAULT_DESTINATIONS.values())


def record(n: int, destination: str, event_type: str) -> Record:
    return Record(destination=destination, key=b"%d" % n, data=b'{"n":%d}' % n,
                  attributes=(("id", f"r-{n}"), ("type", event_type)), event_class=EventClass.CRITICAL,
                  event_type=event_type, updated_ms=1_700_000_000_000 + n)  # fmt: skip


def spool_for(directory: Path, identity: SinkIdentity, orders: int, executions: int) -> None:
    spool = Spool(directory, max_bytes=1 << 30)
    claim(spool, identity)
    spool.append([record(n, "ibkr.orders.v1", "com.ibkr.orders.order.v1") for n in range(orders)])
    spool.append([record(n, "ibkr.executions.v1", "com.ibkr.executions.execution.v1") for n in range(executions)])
    spool.close()


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run([str(SCRIPT), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def test_a_stdout_run_refuses_a_spool_written_for_kafka_and_keeps_every_record(tmp_path: Path) -> None:
    spool_for(tmp_path / "spool", KAFKA, orders=30, executions=12)
    ran = cli("run", "--sink", "stdout://", "--gateway", "https://127.0.0.1:9", "--admin", "127.0.0.1:0",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 2, ran.stderr
    assert ran.stdout == ""  # nothing was printed (and so nothing dropped from the spool)
    assert "delivery.spool_dir" in ran.stderr
    assert "written for kafka://127.0.0.1:8,127.0.0.1:9" in ran.stderr and "sink is stdout://" in ran.stderr
    assert "ibkr-bridge spool status" in ran.stderr and "own delivery.spool_dir" in ran.stderr
    status = json.loads(cli("spool", "status", "spool", "--json", cwd=tmp_path).stdout)
    assert status["by_destination"] == {"ibkr.orders.v1": 30, "ibkr.executions.v1": 12}
    assert status["sink"]["kind"] == "kafka"


def test_spool_status_shows_segments_records_by_destination_and_type_and_the_owner(tmp_path: Path) -> None:
    spool_for(tmp_path / "spool", KAFKA, orders=3, executions=2)
    result = cli("spool", "status", "spool", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("spool spool: 5 undelivered record(s), 1 segment(s), ")
    assert lines[1].startswith("  belongs to   kafka://127.0.0.1:8,127.0.0.1:9 (destinations ")
    assert any(line.split() == ["ibkr.orders.v1", "3"] for line in lines)
    assert any(line.split() == ["com.ibkr.executions.execution.v1", "2"] for line in lines)
    # status acknowledges nothing
    assert cli("spool", "status", "spool", "--json", cwd=tmp_path).stdout.count('"records": 5') == 1


def test_spool_status_counts_past_damage_and_names_what_it_cost(tmp_path: Path) -> None:
    spool_for(tmp_path / "spool", KAFKA, orders=300, executions=0)
    (segment,) = (tmp_path / "spool").glob("*.seg")
    data = bytearray(segment.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)  # a zeroed region in the middle
    segment.write_bytes(bytes(data))
    status = json.loads(cli("spool", "status", "spool", "--json", cwd=tmp_path).stdout)
    assert status["damage"] == {"corrupt": 1}
    assert status["records"] + status["records_lost"] == 300 and 90 <= status["records_lost"] <= 110
    text = cli("spool", "status", "spool", cwd=tmp_path).stdout
    assert f"damage       corrupt 1 region(s); {status['records_lost']} record(s) lost" in text


def test_spool_status_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("spool", "status", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "nope is not a directory" in result.stderr


def test_the_same_sink_takes_its_spool_back(tmp_path: Path) -> None:
    spool_for(tmp_path, KAFKA, orders=2, executions=0)
    spool = Spool(tmp_path, max_bytes=1 << 30)
    claim(spool, SinkIdentity.of("kafka://127.0.0.1:8,127.0.0.1:9", DEFAULT_DESTINATIONS.values()))
    assert spool.read(10)[0][0].key == b"0"
    spool.close()


@pytest.mark.parametrize(
    "other",
    [
        SinkIdentity.of("kafka://10.0.0.1:9092", DEFAULT_DESTINATIONS.values()),  # another cluster
        SinkIdentity.of("kafka://127.0.0.1:9,127.0.0.1:8", [*DEFAULT_DESTINATIONS.values(), "x.orders"]),
        SinkIdentity.of("redis://127.0.0.1:9/0", DEFAULT_DESTINATIONS.values()),
    ],
    ids=["servers", "destinations", "kind"],
)
def test_another_sink_is_refused_while_records_wait(tmp_path: Path, other: SinkIdentity) -> None:
    spool_for(tmp_path, KAFKA, orders=1, executions=0)
    spool = Spool(tmp_path, max_bytes=1 << 30)
    with pytest.raises(SpoolBelongsElsewhere):
        claim(spool, other)
    spool.close()
    assert read_identity(tmp_path) == KAFKA


def test_an_empty_spool_is_taken_over_by_another_sink(tmp_path: Path) -> None:
    spool_for(tmp_path, KAFKA, orders=0, executions=0)
    spool = Spool(tmp_path, max_bytes=1 << 30)
    claim(spool, STDOUT)
    spool.close()
    assert read_identity(tmp_path) == STDOUT


def test_credentials_never_reach_the_identity_file(tmp_path: Path) -> None:
    identity = SinkIdentity.of("redis://user:hunter2@127.0.0.1:6379/2", ["a"])
    assert identity.servers == ("127.0.0.1:6379/2",)
    assert "hunter2" not in json.dumps(identity.to_json())
