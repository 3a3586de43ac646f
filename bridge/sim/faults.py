"""Fault injection: ``POST /sim/faults`` with ``{"fault": NAME, ...params}``, or a scenario file.

Faults (parameters, defaults):

- ``drop`` (connection): close the socket(s) with close code 1000 and an empty reason.
- ``abort`` (connection): cut the socket(s) without a close frame.
- ``stall`` (duration_s=30): send nothing at all, heartbeats included; frames due are dropped.
- ``auth_loss`` (duration_s=None): ``sts`` authenticated:false (three one-key frames, repeated at
  every heartbeat), brokerage data stops and its subscriptions are dropped, REST auth status is false
  and other ``/iserver`` calls answer 401 until ``duration_s`` passes or the client calls
  ``/iserver/reauthenticate`` or ``/iserver/auth/ssodh/init``; then a full ``sts`` authenticated:true.
- ``competing`` (duration_s=5): ``sts`` competing:true, REST ``competing:true``; recovery as above.
- ``nightly_reset`` (duration_s=2): ``sts`` false, every socket closed with 1000, upgrades and
  ``/iserver`` calls answer 503 for ``duration_s``; afterwards new ``server_id`` values.
- ``silence`` (topics=["smd"], duration_s=None): the socket, heartbeats and every other topic go on,
  but nothing is sent on ``topics`` (as when the gateway stops a stream without a word) until
  ``duration_s`` passes or ``clear``; frames due are dropped.
- ``refuse_upgrade`` (count=1, status=401): refuse the next ``count`` websocket upgrades.
- ``malformed`` (kind, connection): one frame of ``invalid_utf8`` (byte 0x99 in a text frame),
  ``truncated_json``, ``unknown_topic`` or ``no_accounts`` (``{"error":"No accounts",...}``), or
  ``raw`` with ``frame`` (the text of any frame, sent as it is); or ``binary`` (duration_s=None:
  for good) to send every frame with the binary opcode.
- ``line_limit`` (max_conids, mode="error"|"silent"): market-data lines beyond ``max_conids``
  distinct conids are refused (invented behaviour: the real socket's answer is unknown).
- ``slow_reader`` (limit_bytes=1 MiB, flood_frames=50000, grace_s=1, duration_s=30): flood every
  socket, then abort (no close frame) any socket whose unread backlog stays above ``limit_bytes``.
- ``ping_flood`` (duration_s=10, pings_per_tick=2000, connection): stop reading the socket(s) and
  send pings (125-byte payloads) every 10 ms: a peer that demands pongs and never reads them.
- ``lst_expire``: (OAuth mode) every live session token issued so far expires now; signed calls
  answer 401 ``live session token expired`` until the client gets a new one.
- ``ssodh_error`` (count=1): the next ``count`` ``ssodh/init`` calls answer 500.
- ``clear``: undo every switch and restore authentication.

Scenario file (JSON or YAML): a list (or ``{"faults": [...]}``) of ``{"at_s": 5, "fault": ..., ...}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from bridge.sim import frames
from bridge.sim.connection import SimConnection
from bridge.sim.gateway import Gateway

log = logging.getLogger(__name__)

Params = dict[str, Any]


class FaultError(ValueError):
    """An unknown fault or a bad parameter; the HTTP API answers 400."""


def _number(params: Params, name: str, default: float | None) -> float | None:
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{name} must be a number, got {value!r}")
    return float(value)


def _targets(gateway: Gateway, params: Params) -> list[SimConnection]:
    wanted = params.get("connection")
    return [c for c in gateway.connections.values() if wanted is None or c.id == wanted]


def recover(gateway: Gateway) -> None:
    """Authentication is back: a full ``sts`` authenticated:true on every socket."""
    if gateway.authenticated and not gateway.competing:
        return
    gateway.authenticated, gateway.competing = True, False
    gateway.broadcast(gateway.sts_frame(), "sts")


async def _recover_after(gateway: Gateway, delay_s: float, then: Callable[[], None] | None = None) -> None:
    await asyncio.sleep(delay_s)
    if then is not None:
        then()
    recover(gateway)


def _lose_auth(gateway: Gateway, competing: bool) -> None:
    gateway.authenticated, gateway.competing = False, competing
    if competing:
        gateway.broadcast(frames.sts_competing(), "sts")
    else:
        for frame in frames.sts_lost():
            gateway.broadcast(frame, "sts")
    if gateway.config.auth_loss_drops_subscriptions:
        for conn in gateway.connections.values():
            conn.drop_brokerage_subscriptions()


async def _drop(gateway: Gateway, params: Params) -> Params:
    conns = _targets(gateway, params)
    for conn in conns:
        gateway.spawn(conn.close(1000))
    return {"closed": [c.id for c in conns]}


async def _abort(gateway: Gateway, params: Params) -> Params:
    conns = _targets(gateway, params)
    for conn in conns:
        conn.abort()
    return {"aborted": [c.id for c in conns]}


async def _stall(gateway: Gateway, params: Params) -> Params:
    duration = _number(params, "duration_s", 30.0) or 0.0
    gateway.stall_until = time.monotonic() + duration
    return {"until_s": duration}


async def _auth_loss(gateway: Gateway, params: Params) -> Params:
    _lose_auth(gateway, competing=False)
    duration = _number(params, "duration_s", None)
    if duration is not None:
        gateway.spawn(_recover_after(gateway, duration))
    return {}


async def _competing(gateway: Gateway, params: Params) -> Params:
    _lose_auth(gateway, competing=True)
    gateway.spawn(_recover_after(gateway, _number(params, "duration_s", 5.0) or 0.0))
    return {}


async def _nightly_reset(gateway: Gateway, params: Params) -> Params:
    duration = _number(params, "duration_s", 2.0) or 0.0
    _lose_auth(gateway, competing=False)
    gateway.refuse_until, gateway.refuse_status = time.monotonic() + duration, 503
    for conn in list(gateway.connections.values()):
        gateway.spawn(conn.close(1000))
    gateway.spawn(_recover_after(gateway, duration, gateway.new_server_epoch))
    return {}


async def _silence(gateway: Gateway, params: Params) -> Params:
    topics = params.get("topics", ["smd"])
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
        raise FaultError('topics must be a non-empty list of topic names, e.g. ["smd", "sld"]')
    duration = _number(params, "duration_s", None)
    until = time.monotonic() + (duration if duration is not None else 1e12)
    gateway.silent_until.update(dict.fromkeys(topics, until))
    return {"topics": topics, "until_s": duration}


async def _refuse_upgrade(gateway: Gateway, params: Params) -> Params:
    status = int(_number(params, "status", 401) or 401)
    if status not in (401, 503):
        raise FaultError("status must be 401 or 503")
    gateway.refuse_count, gateway.refuse_status = int(_number(params, "count", 1) or 0), status
    return {}


_MALFORMED: dict[str, bytes] = {
    "invalid_utf8": b'{"topic":"ntf","args":[{"id":"SIM_NOTICE","text":"Order notice \x99 please review",'
    b'"title":"Notice","url":""}]}',
    "truncated_json": b'{"server_id":"q1","conidEx":"265598","conid":265598,"_updated":17775521',
    "unknown_topic": b'{"topic":"zzz","args":{"note":"a topic no client knows"}}',
    "no_accounts": frames.dumps(frames.no_accounts("smd")),
}


async def _malformed(gateway: Gateway, params: Params) -> Params:
    kind = params.get("kind")
    if kind == "binary":
        duration = _number(params, "duration_s", None)
        gateway.binary_until = time.monotonic() + (duration if duration is not None else 1e12)
        return {}
    payload = _MALFORMED.get(str(kind))
    if kind == "raw" and isinstance(params.get("frame"), str):
        payload = str(params["frame"]).encode("utf-8", "surrogatepass")
    if payload is None:
        raise FaultError(f"kind must be one of {sorted([*_MALFORMED, 'binary', 'raw'])} (raw takes a frame)")
    conns = _targets(gateway, params)
    for conn in conns:
        conn.write_bytes(payload, "malformed", frames.OP_TEXT)
    return {"sent_to": [c.id for c in conns]}


async def _line_limit(gateway: Gateway, params: Params) -> Params:
    limit = _number(params, "max_conids", None)
    mode = str(params.get("mode", "error"))
    if mode not in ("error", "silent"):
        raise FaultError("mode must be 'error' or 'silent'")
    gateway.line_limit = None if limit is None else int(limit)
    gateway.line_limit_mode = mode
    return {}


async def _slow_reader(gateway: Gateway, params: Params) -> Params:
    limit = int(_number(params, "limit_bytes", 1 << 20) or 0)
    flood = int(_number(params, "flood_frames", 50_000) or 0)
    grace = _number(params, "grace_s", 1.0) or 0.1
    duration = _number(params, "duration_s", 30.0) or 0.0
    gateway.slow_reader_limit = limit
    if flood:
        stub = frames.dumps({"server_id": "q0", "conidEx": "265598", "conid": 265598,
                             "_updated": int(time.time() * 1000), "31": "190.00", "topic": "smd+265598"})
        frame = frames.ws_header(len(stub)) + stub
        for conn in _targets(gateway, params):
            conn.flood(frame, flood)
    gateway.spawn(_slow_reader_watch(gateway, grace, duration))
    return {}


async def _slow_reader_watch(gateway: Gateway, grace_s: float, duration_s: float) -> None:
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline and gateway.slow_reader_limit is not None:
        await asyncio.sleep(grace_s)
        limit = gateway.slow_reader_limit
        for conn in list(gateway.connections.values()):
            if limit is not None and conn.backlog_bytes() > limit:
                log.info("dropping slow reader %d with %d bytes unread", conn.id, conn.backlog_bytes())
                gateway.frames["slow_reader_drop"] += 1
                conn.abort()
    gateway.slow_reader_limit = None


async def _ping_flood(gateway: Gateway, params: Params) -> Params:
    duration = _number(params, "duration_s", 10.0) or 0.0
    per_tick = int(_number(params, "pings_per_tick", 2000) or 0)
    conns = _targets(gateway, params)
    gateway.spawn(_ping_flood_run(conns, duration, per_tick))
    return {"flooding": [c.id for c in conns]}


async def _ping_flood_run(conns: list[SimConnection], duration_s: float, per_tick: int) -> None:
    payload = b"p" * 125  # the largest control payload: each pong echoes it
    burst = (frames.ws_header(len(payload), frames.OP_PING) + payload) * per_tick
    for conn in conns:
        conn.pause_reading()
    deadline = time.monotonic() + duration_s
    try:
        while time.monotonic() < deadline and any(not c.closed for c in conns):
            for conn in conns:
                if conn.backlog_bytes() < 4 << 20:  # the simulator's own writes stay bounded
                    conn.write_raw(burst)
            await asyncio.sleep(0.01)
    finally:
        for conn in conns:
            conn.resume_reading()


async def _lst_expire(gateway: Gateway, params: Params) -> Params:
    if gateway.oauth is None:
        raise FaultError("lst_expire needs the OAuth mode (sim --oauth DIR)")
    return {"expired": gateway.oauth.expire_all()}


async def _ssodh_error(gateway: Gateway, params: Params) -> Params:
    gateway.ssodh_errors = int(_number(params, "count", 1) or 0)
    return {"count": gateway.ssodh_errors}


async def _clear(gateway: Gateway, params: Params) -> Params:
    gateway.stall_until = gateway.binary_until = gateway.refuse_until = 0.0
    gateway.refuse_count = 0
    gateway.line_limit = gateway.slow_reader_limit = None
    gateway.silent_until.clear()
    recover(gateway)
    return {}


FAULTS: dict[str, Callable[[Gateway, Params], Awaitable[Params]]] = {
    "drop": _drop,
    "abort": _abort,
    "stall": _stall,
    "silence": _silence,
    "auth_loss": _auth_loss,
    "competing": _competing,
    "nightly_reset": _nightly_reset,
    "refuse_upgrade": _refuse_upgrade,
    "malformed": _malformed,
    "line_limit": _line_limit,
    "slow_reader": _slow_reader,
    "ping_flood": _ping_flood,
    "lst_expire": _lst_expire,
    "ssodh_error": _ssodh_error,
    "clear": _clear,
}


async def apply_fault(gateway: Gateway, name: str, params: Params) -> Params:
    handler = FAULTS.get(name)
    if handler is None:
        raise FaultError(f"unknown fault {name!r}; known: {sorted(FAULTS)}")
    result = await handler(gateway, params)
    gateway.faults.append({"fault": name, "params": params, "at_ms": int(time.time() * 1000)})
    log.info("fault %s applied %s", name, params)
    return result


def load_scenario(path: Path) -> list[Params]:
    """Read a scenario file: entries sorted by ``at_s``, each naming a known fault."""
    data = yaml.safe_load(path.read_text())
    items = data.get("faults") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise FaultError(f"{path}: expected a list of faults or {{'faults': [...]}}")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or item.get("fault") not in FAULTS:
            raise FaultError(f"{path}: entry {index} needs 'fault', one of {sorted(FAULTS)}")
        _number(item, "at_s", 0.0)
        out.append(dict(item))
    return sorted(out, key=lambda item: float(item.get("at_s", 0.0)))


async def run_scenario(gateway: Gateway, items: list[Params]) -> None:
    start = time.monotonic()
    for item in items:
        params = dict(item)
        at_s = float(params.pop("at_s", 0.0))
        name = str(params.pop("fault"))
        await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
        try:
            await apply_fault(gateway, name, params)
        except FaultError:
            log.exception("scenario fault %s failed", name)
