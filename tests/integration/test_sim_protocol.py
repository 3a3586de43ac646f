"""The simulator's frames match reference §1.4-§3 and the conformance checklist §6.5."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.sim import Frame, SimProcess, SimSocket

ACCOUNT = "DU1234567"


def objs(frames: list[Frame]) -> list[dict[str, Any]]:
    return [f.json() for f in frames if f.opcode in (1, 2)]


def opened(sim: SimProcess, cookie: str | None = None) -> tuple[SimSocket, list[dict[str, Any]]]:
    sock = SimSocket(sim.ws_url, cookie=cookie)
    return sock, objs(sock.json_until(lambda m: m.get("topic") == "sts"))


def wait_rest(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met over REST")


def test_connect_burst_is_system_then_act_then_sts(sim_process: SimProcess) -> None:
    _, burst = opened(sim_process)
    assert [m["topic"] for m in burst] == ["system", "act", "sts"]
    assert burst[0] == {"topic": "system", "success": "simuser1", "isFT": False, "isPaper": False}
    assert burst[1]["args"]["accounts"] == [ACCOUNT] and burst[1]["args"]["selectedAccount"] == ACCOUNT
    assert burst[2]["args"]["authenticated"] is True and burst[2]["args"]["competing"] is False
    assert set(burst[2]["args"]) >= {"connected", "established", "message", "fail", "serverName", "username"}


def test_heartbeats_carry_the_same_value_on_every_socket(sim_process: SimProcess) -> None:
    first, _ = opened(sim_process)
    second, _ = opened(sim_process)
    beats = []
    for sock in (first, second):
        frames = sock.json_until(lambda m: "hb" in m)
        frames += sock.json_until(lambda m: "hb" in m)
        beats.append({m["hb"] for m in objs(frames) if "hb" in m})
    assert beats[0] & beats[1]


def test_tic_is_answered_four_times_with_the_tickle_session_id(sim_process: SimProcess) -> None:
    session = sim_process.rest("POST", "/tickle")["session"]
    sock, _ = opened(sim_process)
    sock.send("tic")
    replies = [m for m in objs(sock.json_until(lambda m: m.get("topic") == "tic")) if m.get("topic") == "tic"]
    for _ in range(3):
        replies += objs(sock.json_until(lambda m: m.get("topic") == "tic"))[-1:]
    assert len({json.dumps(r) for r in replies}) == 1
    assert replies[0]["id"] == session and replies[0]["alive"] is True


def test_ech_hb_is_echoed_as_raw_text(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send("ech+hb")
    assert sock.frames_until(lambda f: f.data == b"ech+hb")[-1].opcode == 1


def test_unknown_topics_and_late_session_messages_get_a_topic_unknown_error(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send("xyz+1+{}")
    assert sock.json_until(lambda m: "error" in m)[-1].json()["error"] == "Topic unknown 'xyz'"
    sock.send('{"session":"abc"}')
    assert sock.json_until(lambda m: "error" in m)[-1].json()["error"] == "Topic unknown '{\"s'"


def test_smd_sends_a_duplicated_full_snapshot_then_sparse_deltas(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send('smd+265598+{"fields":["31","83","84","86","55"]}')
    frames = objs(sock.json_until(lambda m: m.get("topic") == "smd+265598" and "6509" not in m))
    md = [m for m in frames if m.get("topic") == "smd+265598"]
    assert md[0] == md[1] and md[0]["6509"] == "RpB" and md[0]["55"] == "AAPL"
    assert isinstance(md[0]["83"], float) and all(isinstance(md[0][f], str) for f in ("31", "84", "86"))
    for frame in md:
        assert frame["conid"] == 265598 and frame["conidEx"] == "265598"
        assert frame["server_id"] == frame["6119"] and len(str(frame["_updated"])) == 13
    assert set(md[-1]) - {"topic", "conid", "conidEx", "_updated", "server_id", "6119"} <= {
        "31", "83", "84", "86"}


def test_subscriptions_stop_on_umd_and_die_with_the_socket(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send('smd+265598+{"fields":["31"]}')
    sock.send('smd+8314+{"fields":["31"]}')
    sock.json_until(lambda m: m.get("topic") == "smd+8314")
    sock.send("umd+265598+{}")
    wait_rest(lambda: sim_process.stats()["connections"][0]["subscriptions"]["smd"] == ["8314"])
    sock.close()
    wait_rest(lambda: sim_process.stats()["connections_open"] == 0)
    _again, _ = opened(sim_process)
    assert sim_process.stats()["connections"][0]["subscriptions"]["smd"] == []


def test_smd_goes_silent_after_its_expiry(sim_process_factory: Callable[..., SimProcess]) -> None:
    sim = sim_process_factory("--smd-expiry-s", "0.5")
    sock, _ = opened(sim)
    sock.send('smd+265598+{"fields":["31"]}')
    sock.json_until(lambda m: m.get("topic") == "smd+265598")
    wait_rest(lambda: sim.stats()["connections"][0]["subscriptions"]["smd"] == [])
    expired_ms = int(time.time() * 1000)
    frames = objs(sock.json_until(lambda m: m.get("hb", 0) > expired_ms + 500))  # a heartbeat period later
    assert not [m for m in frames if m.get("topic", "").startswith("smd") and m["_updated"] > expired_ms]


def test_str_acks_with_empty_args_then_sends_each_execution_twice(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send('str+{"realtimeUpdatesOnly":false,"days":7}')
    frames = objs(sock.json_until(lambda m: m.get("topic") == "str" and "commission" in str(m)))
    trades = [m for m in frames if m.get("topic") == "str"]
    assert trades[0] == {"topic": "str", "args": []}
    first, second = trades[1]["args"][0], trades[2]["args"][0]
    assert "commission" not in first and second == {**first, "commission": second["commission"]}
    assert isinstance(first["price"], str) and isinstance(first["size"], float)


def test_account_topics_use_result_arrays_and_acknowledge_unsubscribes(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send("spl+{}")
    pnl = sock.json_until(lambda m: m.get("topic") == "spl")[-1].json()
    assert list(pnl["args"]) == [f"{ACCOUNT}.Core"]
    sock.send(f"sld+{ACCOUNT}")
    ledger = sock.json_until(lambda m: m.get("topic") == f"sld+{ACCOUNT}")[-1].json()["result"]
    assert ledger[0]["acctCode"] == ACCOUNT and len(str(ledger[0]["timestamp"])) == 10
    sock.send(f'ssd+{ACCOUNT}+{{"keys":["ExcessLiquidity-S"],"fields":["currency","monetaryValue"]}}')
    summary = sock.json_until(lambda m: m.get("topic") == f"ssd+{ACCOUNT}")[-1].json()["result"]
    assert {r["key"] for r in summary} == {"AccountCode", "ExcessLiquidity-S"}
    sock.send(f"usd+{ACCOUNT}+{{}}")
    assert sock.json_until(lambda m: "result" in m and "topic" not in m)[-1].json() == {
        "result": "unsubscribed from summary"}
    sock.send(f"uld+{ACCOUNT}+{{}}")
    assert sock.json_until(lambda m: "result" in m and "topic" not in m)[-1].json() == {
        "result": "unsubscribed from ledger"}


def test_smh_answers_with_a_server_id_then_streams_updates_limits_to_five_and_umh_is_acknowledged(
    sim_process: SimProcess,
) -> None:
    sock, _ = opened(sim_process)
    server_ids = []
    for _ in range(5):
        sock.send('smh+265598+{"period":"2h","bar":"5min"}')
        bars = sock.json_until(lambda m: m.get("topic") == "smh+265598" and "tickNum" not in m)[-1].json()
        assert bars["data"] and isinstance(bars["serverId"], str) and "t" not in bars["data"][0]
        server_ids.append(bars["serverId"])
    update = sock.json_until(lambda m: "tickNum" in m)[-1].json()  # the live shape: updates follow
    assert update["serverId"] in server_ids and update["topic"] == "smh+265598"
    sock.send("smh+8314+{}")
    assert sock.json_until(lambda m: "error" in m)[-1].json()["topic"] == "smh"
    sock.send(f"umh+{server_ids[0]}")
    assert sock.json_until(lambda m: "message" in m)[-1].json() == {"message": f"Unsubscribed {server_ids[0]}"}


def test_sbd_streams_a_price_ladder_for_account_and_conid(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send(f"sbd+{ACCOUNT}+265598")
    ladder = sock.json_until(lambda m: m.get("topic") == f"sbd+{ACCOUNT}+265598")[-1].json()
    assert [row["row"] for row in ladder["data"]] == list(range(9))
    assert sum(row["focus"] for row in ladder["data"]) == 1


def test_required_session_waits_for_the_session_message_or_cookie(
    sim_process_factory: Callable[..., SimProcess],
) -> None:
    sim = sim_process_factory("--require-session")
    session = sim.rest("POST", "/tickle")["session"]
    sock = SimSocket(sim.ws_url)
    assert sock.frame().json() == {"message": "waiting for session"}
    sock.send('{"session":"not-the-session"}')
    sock.send(json.dumps({"session": session}))
    burst = objs(sock.json_until(lambda m: m.get("topic") == "sts"))
    assert [m.get("topic") for m in burst] == ["system", "act", "sts"]
    _, with_cookie = opened(sim, cookie=f'api={json.dumps({"session": session})}')
    assert with_cookie[0]["topic"] == "system"


def test_cancel_goes_pending_cancel_then_cancelled_on_sor(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send("sor+{}")
    order_id = sim_process.place_order(265598, "BUY", 1, "LMT", price=1.0)
    sock.json_until(lambda m: m.get("topic") == "sor" and m["args"][-1].get("status") == "Submitted")
    answer = sim_process.rest("DELETE", f"/iserver/account/{ACCOUNT}/order/{order_id}")
    assert answer["msg"] == "Request was submitted"
    frames = objs(sock.json_until(lambda m: m.get("topic") == "sor" and m["args"][-1].get("status") == "Cancelled"))
    pending = [e for m in frames if m.get("topic") == "sor" for e in m["args"] if e.get("status") == "PendingCancel"]
    assert pending[0]["conidex"] == "265598" and pending[0]["orderId"] == order_id and "ticker" in pending[0]


def test_orders_filled_while_no_socket_is_open_show_up_over_rest(sim_process: SimProcess) -> None:
    order_id = sim_process.place_order(8314, "SELL", 4)
    orders = wait_rest(lambda: [o for o in sim_process.rest("GET", "/iserver/account/orders?force=true")["orders"]
                                if o["orderId"] == order_id and o["status"] == "Filled"])
    assert orders[0]["filledQuantity"] == 4.0
    trades = [t for t in sim_process.rest("GET", "/iserver/account/trades") if t["order_id"] == order_id]
    assert sum(t["size"] for t in trades) == 4.0
    record = sim_process.record()
    assert {e["execution_id"] for e in record["executions"]} >= {t["execution_id"] for t in trades}


def test_orders_call_with_filters_suppresses_sor_until_force(sim_process: SimProcess) -> None:
    sock, _ = opened(sim_process)
    sock.send("sor+{}")
    sim_process.rest("GET", "/iserver/account/orders?filters=filled")
    hidden = sim_process.place_order(265598, "BUY", 1)
    wait_rest(lambda: sim_process.record()["orders"][-1]["status"] == "Filled")
    sim_process.rest("GET", "/iserver/account/orders?force=true")
    shown = sim_process.place_order(265598, "BUY", 1)
    frames = objs(sock.json_until(lambda m: m.get("topic") == "sor" and m["args"][-1].get("status") == "Filled"))
    ids = {e["orderId"] for m in frames if m.get("topic") == "sor" for e in m["args"]}
    assert ids == {shown} and hidden not in ids


def test_rest_pacing_answers_429_beyond_ten_requests_per_second(
    sim_process_factory: Callable[..., SimProcess],
) -> None:
    sim = sim_process_factory("--rest-rate-limit", "10")
    answers = [sim.rest("POST", "/iserver/auth/status") for _ in range(25)]
    assert any(a.get("status") == 429 for a in answers)
    assert sim.stats()["rest_throttled"] >= 1


def test_scenario_file_applies_faults_on_schedule(sim_process_factory: Callable[..., SimProcess],
                                                  tmp_path: Any) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("faults:\n  - {at_s: 1.0, fault: drop}\n")
    sim = sim_process_factory("--scenario", str(scenario))
    sock, _ = opened(sim)
    assert sock.frames_until(lambda f: f.opcode == 8, timeout_s=5)[-1].close_code == 1000
    assert sim.stats()["faults"][0]["fault"] == "drop"


@pytest.mark.parametrize("target", ["265598@NASDAQ", "0;;;265598/1,8314/-1"])
def test_exchange_and_combo_targets_are_echoed_verbatim(sim_process: SimProcess, target: str) -> None:
    sock, _ = opened(sim_process)
    sock.send(f'smd+{target}+{{"fields":["31"]}}')
    frame = sock.json_until(lambda m: m.get("topic") == f"smd+{target}")[-1].json()
    assert frame["conidEx"] == target


def test_burst_mode_sends_well_formed_sparse_smd_frames(sim_process_factory: Callable[..., SimProcess]) -> None:
    sim = sim_process_factory("--rate", "5000")
    sock, _ = opened(sim)
    sock.send('smd+265598+{"fields":["31","84","86"]}')
    sock.send('smd+8314+{"fields":["31","84","86"]}')
    md: list[dict[str, Any]] = []
    while len(md) < 500:
        frame = sock.frame().json()
        if frame.get("topic", "").startswith("smd+"):
            md.append(frame)
    assert {m["conid"] for m in md} == {265598, 8314}
    for frame in md:
        assert frame["topic"] == f"smd+{frame['conid']}" and frame["server_id"] == frame["6119"]
        assert len(str(frame["_updated"])) == 13 and {"31", "84", "86"} & set(frame)
