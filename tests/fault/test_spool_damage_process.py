"""The real bridge replaying a large damaged spool into a real Redis.

The spool holds three 16 MiB segments of orders; the first one is zero-filled. While the bridge
crosses it and replays the rest, ``/livez`` answers and SIGTERM ends the run with exit code 0 (before,
one traceback per 8 zeroed bytes blocked the loop: ``/livez`` unanswered for a minute, SIGTERM
ignored). After a restart every order outside the zeroed segment is in Redis, the damage was
reported once: one log line, ``ibkr_bridge_spool_damaged_regions_total`` and
``ibkr_bridge_spool_records_lost_total`` on ``/metrics``, and a ``spool_damaged`` lifecycle event
on ``ibkr.bridge.v1`` naming the segment, the offset and the records lost.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bridge.delivery.spool import Spool
from tests.fault.harness import BridgeProcess
from tests.fixtures.brokers import ServerProcess, order_record
from tests.fixtures.processes import free_port
from tests.fixtures.spool_damage import parse, path_of, segment_files

ORDERS = "ibkr.orders.v1"
LIFECYCLE = "ibkr.bridge.v1"
SEGMENT_BYTES = 16 << 20


def write_spool(directory: Path) -> tuple[list[str], set[str], int]:
    """Orders padded to ~700 bytes into three 16 MiB segments; zero the first. (ids, zeroed ids, segment)."""
    spool = Spool(directory, max_bytes=1 << 40, segment_bytes=SEGMENT_BYTES, fsync="never")
    ids: list[str] = []
    n = 0
    while spool.segment_count < 3 or spool.end.offset < SEGMENT_BYTES // 2:
        chunk = []
        for _ in range(1_000):
            record = order_record(ORDERS, 1_000 + n % 500, n)
            record.data = record.data[:-1] + b',"pad":"' + b"x" * 500 + b'"}'
            chunk.append(record)
            ids.append(str(record.id))
            n += 1
        spool.append(chunk)
    spool.close()
    first = int(segment_files(directory)[0].stem)
    path = path_of(directory, first)
    zeroed = {str(record.id) for _, _, record in parse(path)}
    path.write_bytes(b"\0" * path.stat().st_size)
    return ids, zeroed, first


def config(redis_url: str, spool_dir: Path) -> dict[str, Any]:
    return {
        "gateway": {"url": f"https://127.0.0.1:{free_port()}", "insecure_tls": True},  # nobody there
        "session": {"reconnect_floor_s": 0.5, "reconnect_cap_s": 2.0},
        "subscriptions": {"orders": True},
        "sink": {"url": redis_url, "redis": {"maxlen_events": 1_000_000}},
        "delivery": {
            "spool_dir": str(spool_dir),
            "spool_segment_bytes": SEGMENT_BYTES,
            "max_batch_events": 500,
            "drain_timeout_s": 1,
        },
        "logging": {"level": "INFO", "format": "text"},
    }


def livez(bridge: BridgeProcess) -> int:
    url = f"http://127.0.0.1:{bridge.admin_port}/livez"
    with urllib.request.urlopen(url, timeout=2) as response:  # the chart's liveness probe allows 2 s
        return int(response.status)


def published_ids(client: redis.Redis) -> set[str]:
    return {fields[b"id"].decode() for _, fields in client.xrange(ORDERS)}


def test_a_zeroed_16_mib_segment_is_crossed_while_livez_answers_and_sigterm_is_honoured(
    tmp_path: Path, own_redis_server: ServerProcess, bridge_process: Callable[[dict[str, Any]], BridgeProcess]
) -> None:
    spool_dir = tmp_path / "spool"
    ids, zeroed, segment = write_spool(spool_dir)
    assert len(zeroed) > 10_000 and len(set(ids)) == len(ids)
    bridge = bridge_process(config(own_redis_server.address, spool_dir))
    client = redis.Redis.from_url(own_redis_server.address)

    bridge.start()
    answers = []
    while client.xlen(ORDERS) < 5_000 and bridge.running:  # the replay is under way
        answers.append(livez(bridge))
    answers += [livez(bridge) for _ in range(20)]
    assert set(answers) == {200}
    metrics = bridge.metrics()
    assert 'ibkr_bridge_spool_damaged_regions_total{kind="corrupt"} 1.0' in metrics
    assert f"ibkr_bridge_spool_records_lost_total {float(len(zeroed))}" in metrics
    assert client.xlen(ORDERS) < len(ids) - len(zeroed)  # still replaying when SIGTERM comes
    assert bridge.stop(timeout_s=20) == 0

    bridge.start()
    deadline = time.monotonic() + 120
    while (published := published_ids(client)) != set(ids) - zeroed and time.monotonic() < deadline:
        time.sleep(0.5)
    assert published == set(ids) - zeroed  # at least once: only the zeroed segment's orders are lost
    assert 'ibkr_bridge_spool_damaged_regions_total{kind="corrupt"} 0.0' in bridge.metrics()  # not again
    assert bridge.stop() == 0

    log = bridge.log()
    lines = [line for line in log.splitlines() if "spool damage" in line]
    assert len(lines) == 1, lines  # the second run starts after it: the first acknowledged past it
    assert log.count("Traceback") == 0
    events = [json.loads(fields[b"data"]) for _, fields in client.xrange(LIFECYCLE)]
    damaged = [e for e in events if e["kind"] == "spool_damaged"]
    assert damaged and {(e["detail"]["segment"], e["detail"]["offset"], e["detail"]["records_lost"])
                        for e in damaged} == {(segment, 0, len(zeroed))}  # fmt: skip
