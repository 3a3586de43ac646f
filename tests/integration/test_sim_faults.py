"""Each fault of ``POST /sim/faults`` as a client sees it on the wire (reference §1.5, §3, §6)."""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import pytest
import websocket

from tests.fixtures.sim import Frame, SimProcess, SimSocket

SMD_AAPL = 'smd+265598+{"fields":["31","84","86"]}'
CLOSE = websocket.ABNF.OPCODE_CLOSE


def connected(sim: SimProcess, *messages: str) -> SimSocket:
    sock = SimSocket(sim.ws_url)
    sock.json_until(lambda m: m.get("topic") == "sts")
    for message in messages:
        sock.send(message)
    if SMD_AAPL in messages:
        sock.json_until(lambda m: m.get("topic") == "smd+265598")
    return sock


def read_until_gone(sock: SimSocket, timeout_s: float = 10.0) -> tuple[list[Frame], BaseException | None]:
    """Frames until the connection ends; the exception that ended it (None after a close frame)."""
    frames: list[Frame] = []
    try:
        while True:
            frame = sock.frame(timeout_s)
            frames.append(frame)
            if frame.opcode == CLOSE:
                return frames, None
    except (websocket.WebSocketConnectionClosedException, OSError, ssl.SSLError) as exc:
        return frames, exc


def connect_when_accepted(sim: SimProcess, timeout_s: float) -> SimSocket:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return SimSocket(sim.ws_url)
        except websocket.WebSocketBadStatusException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def sts_args(frames: list[Frame]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        if frame.opcode != CLOSE:
            obj = frame.json()
            if obj.get("topic") == "sts":
                out.append(obj["args"])
    return out


def test_drop_closes_the_socket_with_code_1000_and_no_reason(sim_process: SimProcess) -> None:
    sock = connected(sim_process)
    sim_process.apply_fault("drop")
    frames, error = read_until_gone(sock)
    assert error is None
    assert frames[-1].close_code == 1000
    assert frames[-1].data[2:] == b""


def test_abort_ends_the_socket_without_a_close_frame(sim_process: SimProcess) -> None:
    sock = connected(sim_process, SMD_AAPL)
    sim_process.apply_fault("abort")
    frames, error = read_until_gone(sock)
    assert error is not None
    assert all(f.opcode != CLOSE for f in frames)


def test_stall_sends_nothing_not_even_heartbeats_then_resumes(sim_process: SimProcess) -> None:
    sock = connected(sim_process, SMD_AAPL)
    sim_process.apply_fault("stall", duration_s=2.0)
    stalled_at_ms = sim_process.stats()["faults"][-1]["at_ms"]
    frames = sock.json_until(lambda m: (m.get("hb") or m.get("_updated") or 0) > stalled_at_ms, timeout_s=30)
    stamps = [f.json().get("hb") or f.json().get("_updated") for f in frames]
    resumed_ms = stamps[-1]
    assert resumed_ms >= stalled_at_ms + 1900
    assert all(stamp <= stalled_at_ms for stamp in stamps[:-1] if stamp)
    assert sim_process.stats()["suppressed"]["system"] >= 3


def test_silence_stops_one_topic_while_heartbeats_go_on_then_resumes(sim_process: SimProcess) -> None:
    sock = connected(sim_process, SMD_AAPL)
    sim_process.apply_fault("silence", topics=["smd"], duration_s=2.0)
    silent_at_ms = sim_process.stats()["faults"][-1]["at_ms"]
    frames = sock.json_until(lambda m: (m.get("_updated") or 0) > silent_at_ms + 100, timeout_s=5)
    quotes = [f.json()["_updated"] for f in frames if f.json().get("topic", "").startswith("smd")]
    heartbeats = [f.json()["hb"] for f in frames if f.json().get("topic") == "system" and "hb" in f.json()]
    assert quotes[-1] >= silent_at_ms + 1900
    assert all(stamp <= silent_at_ms + 100 for stamp in quotes[:-1])
    assert len([hb for hb in heartbeats if hb > silent_at_ms]) >= 3  # the socket itself stayed alive
    assert sim_process.stats()["suppressed"]["smd"] >= 10


def test_auth_loss_reports_sts_false_stops_data_and_recovers_on_reauthenticate(sim_process: SimProcess) -> None:
    sock = connected(sim_process, SMD_AAPL)
    sim_process.apply_fault("auth_loss")
    frames = sock.json_until(lambda m: m.get("topic") == "sts" and m["args"] == {"message": ""})
    assert {"authenticated": False} in sts_args(frames)
    assert sim_process.rest("POST", "/iserver/auth/status")["authenticated"] is False
    assert sim_process.rest("GET", "/iserver/accounts")["status"] == 401
    assert sim_process.stats()["connections"][0]["subscriptions"]["smd"] == []
    sim_process.rest("POST", "/iserver/reauthenticate")
    frames = sock.json_until(lambda m: m.get("topic") == "sts" and m["args"].get("authenticated") is True)
    assert not [f for f in frames if f.json().get("topic", "").startswith("smd")]
    assert sim_process.rest("POST", "/iserver/auth/status")["authenticated"] is True


def test_competing_session_reports_competing_then_recovers(sim_process: SimProcess) -> None:
    sock = connected(sim_process)
    sim_process.apply_fault("competing", duration_s=1.0)
    frames = sock.json_until(lambda m: m.get("topic") == "sts")
    assert sts_args(frames)[-1] == {"authenticated": False, "competing": True, "message": "",
                                    "fail": "Competing session"}
    status = sim_process.rest("POST", "/iserver/auth/status")
    assert status["competing"] is True and status["authenticated"] is False
    frames = sock.json_until(lambda m: m.get("topic") == "sts", timeout_s=30)
    assert sts_args(frames)[-1]["authenticated"] is True
    assert sts_args(frames)[-1]["competing"] is False


def test_nightly_reset_closes_sockets_refuses_upgrades_then_comes_back(sim_process: SimProcess) -> None:
    sock = connected(sim_process, SMD_AAPL)
    old_server_id = sock.json_until(lambda m: m.get("topic") == "smd+265598")[-1].json()["server_id"]
    # The reset window outlasts a loaded machine's slowest reconnect attempt: the refused upgrade
    # below must land inside it however slow this machine is.
    sim_process.apply_fault("nightly_reset", duration_s=6.0)
    frames, error = read_until_gone(sock)
    assert error is None and frames[-1].close_code == 1000
    assert {"authenticated": False} in sts_args(frames)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        SimSocket(sim_process.ws_url)
    assert refused.value.status_code == 503
    fresh = connect_when_accepted(sim_process, timeout_s=60)
    burst = fresh.json_until(lambda m: m.get("topic") == "sts")
    assert sts_args(burst)[-1]["authenticated"] is True
    fresh.send(SMD_AAPL)
    new_server_id = fresh.json_until(lambda m: m.get("topic") == "smd+265598")[-1].json()["server_id"]
    assert new_server_id != old_server_id


@pytest.mark.parametrize("status", [401, 503])
def test_refuse_upgrade_rejects_the_next_upgrades_with_http_status(sim_process: SimProcess, status: int) -> None:
    sim_process.apply_fault("refuse_upgrade", count=2, status=status)
    for _ in range(2):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            SimSocket(sim_process.ws_url)
        assert refused.value.status_code == status
    connected(sim_process)
    assert sim_process.stats()["refused_upgrades"] == 2


def test_malformed_frames_arrive_as_described(sim_process: SimProcess) -> None:
    sock = connected(sim_process)
    for kind in ("invalid_utf8", "truncated_json", "unknown_topic", "no_accounts"):
        sim_process.apply_fault("malformed", kind=kind)
    got = sock.frames_until(lambda f: b"No accounts" in f.data)
    malformed = [f for f in got if b'"hb"' not in f.data][-4:]
    assert b"\x99" in malformed[0].data and malformed[0].opcode == websocket.ABNF.OPCODE_TEXT
    with pytest.raises(UnicodeDecodeError):
        malformed[0].data.decode("utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed[1].data)
    assert malformed[2].json()["topic"] == "zzz"
    assert malformed[3].json() == {"error": "No accounts", "code": 500, "topic": "smd"}


def test_malformed_binary_switches_frames_to_the_binary_opcode(sim_process: SimProcess) -> None:
    sock = connected(sim_process)
    sim_process.apply_fault("malformed", kind="binary")
    sock.send("tic")
    frame = sock.frames_until(lambda f: b'"tic"' in f.data)[-1]
    assert frame.opcode == websocket.ABNF.OPCODE_BINARY
    assert frame.json()["alive"] is True


def test_line_limit_refuses_conids_beyond_the_limit(sim_process: SimProcess) -> None:
    sim_process.apply_fault("line_limit", max_conids=1)
    sock = connected(sim_process, SMD_AAPL)
    sock.send('smd+8314+{"fields":["31"]}')
    error = sock.json_until(lambda m: "error" in m)[-1].json()
    assert error["code"] == 101 and error["topic"] == "smd+8314"
    assert sim_process.stats()["connections"][0]["subscriptions"]["smd"] == ["265598"]


def test_slow_reader_is_dropped_without_a_close_frame(sim_process: SimProcess) -> None:
    sock = connected(sim_process, SMD_AAPL)
    sim_process.apply_fault("slow_reader", limit_bytes=256 * 1024, flood_frames=100_000, grace_s=0.3)
    deadline = time.monotonic() + 10
    while not sim_process.stats()["frames"].get("slow_reader_drop") and time.monotonic() < deadline:
        time.sleep(0.1)  # the client reads nothing meanwhile
    assert sim_process.stats()["connections_open"] == 0
    frames, error = read_until_gone(sock)
    assert error is not None
    assert all(f.opcode != CLOSE for f in frames)
    assert sim_process.stats()["frames"]["slow_reader_drop"] == 1


def test_unknown_fault_is_refused_with_http_400(sim_process: SimProcess) -> None:
    answer = sim_process.apply_fault("meteor")
    assert answer["status"] == 400 and "unknown fault" in answer["error"]
