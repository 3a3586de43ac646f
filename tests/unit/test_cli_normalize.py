"""``ibkr-bridge normalize``: one line per event, --group, --stats, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

SESSIONS = Path(__file__).parents[1] / "data" / "sessions"


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], input=stdin, capture_output=True,
                          timeout=60, check=False)  # fmt: skip


def test_group_mode_writes_exactly_one_array_per_input_line() -> None:
    session = SESSIONS / "orders.jsonl"
    result = run_cli("normalize", "--input", str(session), "--group")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(session.read_bytes().splitlines())
    assert all(isinstance(orjson.loads(line), list) and orjson.loads(line) for line in lines)


def test_plain_mode_writes_structured_cloudevents_one_per_line() -> None:
    result = run_cli("normalize", stdin=b'{"topic":"sor","args":[{"acct":"A","orderId":1},{"acct":"A","orderId":2}]}\n')
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["com.ibkr.orders.order.v1"] * 2
    assert all(e["specversion"] == "1.0" and "data" in e for e in events)
    assert [e["subject"] for e in events] == ["1", "2"]


def test_malformed_frames_exit_zero_and_are_counted_as_dead_letters() -> None:
    result = run_cli("normalize", "--input", str(SESSIONS / "malformed.jsonl"), "--stats")
    assert result.returncode == 0
    assert b"dead_letter" in result.stderr and b"com.ibkr.bridge.deadletter.v1" in result.stderr


def test_a_missing_input_file_is_a_usage_error() -> None:
    result = run_cli("normalize", "--input", "/nonexistent/frames.jsonl")
    assert result.returncode == 2
    assert b"cannot read --input" in result.stderr


def test_the_bundled_sample_session_normalizes() -> None:
    result = run_cli("normalize", "--sample", "--stats")
    assert result.returncode == 0 and result.stdout.count(b"\n") > 10


def test_bars_start_times_are_read_in_the_zone_given() -> None:
    session = str(SESSIONS / "bars_live.jsonl")
    utc, new_york = (orjson.loads(run_cli("normalize", "--input", session, *zone).stdout.splitlines()[0])["data"]
                     for zone in ((), ("--bars-time-zone", "America/New_York")))  # fmt: skip
    assert (utc["time_zone"], new_york["time_zone"]) == ("UTC", "America/New_York")
    assert new_york["start_time_ms"] - utc["start_time_ms"] == 5 * 3600 * 1000  # EST in March 2024
    assert run_cli("normalize", "--bars-time-zone", "Mars/Olympus").returncode == 2
