"""Recorded sessions replayed through normalizer + codec against committed golden output.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_normalizer_golden.py``
and review the diff: every changed line is a change consumers will see.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from bridge.replay import fixed_clock, read_frames, replay

DATA = Path(__file__).parents[1] / "data"
SESSIONS = sorted((DATA / "sessions").glob("*.jsonl"))
EPOCH_MS = 1_777_000_000_000


def render(session: Path) -> bytes:
    with session.open("rb") as lines:
        groups = replay(read_frames(lines), fixed_clock(EPOCH_MS))
        return b"".join(b"[" + b",".join(envelopes) + b"]\n" for envelopes in groups)


@pytest.mark.parametrize("session", SESSIONS, ids=[s.stem for s in SESSIONS])
def test_recorded_session_normalizes_to_its_golden_output(session: Path) -> None:
    golden = DATA / "golden" / session.name
    actual = render(session)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_bytes(actual)
    assert golden.exists(), f"no golden file for {session.name}; run with UPDATE_GOLDEN=1 and review it"
    expected_lines = golden.read_bytes().splitlines()
    actual_lines = actual.splitlines()
    assert len(actual_lines) == len(expected_lines)
    for number, (got, want) in enumerate(zip(actual_lines, expected_lines, strict=True), start=1):
        assert orjson.loads(got) == orjson.loads(want), f"{session.name} line {number} differs"


def test_every_recorded_frame_yields_at_least_one_event() -> None:
    for session in SESSIONS:
        for number, line in enumerate(render(session).splitlines(), start=1):
            assert orjson.loads(line), f"{session.name} line {number} produced no event"
