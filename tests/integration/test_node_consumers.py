"""The Node.js consumers of examples/node (kafkajs, node-redis, ajv, fzstd; installed with ``npm ci``)
against the whole bridge reading the simulator, on the real Kafka-protocol broker and redis-server.

Each starts mid-stream, reads every destination of the AsyncAPI document, validates every event's
data against the shipped JSON Schemas, and ends holding the live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bridge import asyncapi
from bridge.app import router_for
from bridge.schemagen import committed_schema_dir
from tests.fixtures.node import NODE_DIR
from tests.fixtures.sim import SimProcess
from tests.integration.test_state_bootstrap import (
    KafkaReader,
    eventually,
    kafka_sink,
    place_orders,
    running,
    settings_for,
    stream_state,
)

NODE_TIMEOUT_S = 120


def write_document(settings: Any, path: Path) -> dict[str, Any]:
    document = asyncapi.document("test", router_for(settings))
    path.write_text(json.dumps(document))
    return document


async def start_node(node: str, script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / script), "--schemas", str(committed_schema_dir()), *args,
        cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


async def report_of(process: asyncio.subprocess.Process) -> dict[str, Any]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT_S)
    assert process.returncode == 0, f"exit {process.returncode}: {stderr.decode()[-3000:]} {stdout.decode()[-2000:]}"
    return dict(json.loads(stdout.decode().strip().splitlines()[-1]))


async def test_the_kafkajs_consumer_reads_every_destination_validates_every_event_and_holds_the_live_state(
    kafka_broker: str, sim_process: SimProcess, node: str, node_packages: Path, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = settings_for(sim_process, tmp_path, kafka_sink(kafka_broker), prefix)
    document = write_document(settings, tmp_path / "asyncapi.json")
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    md, orders = f"{prefix}.marketdata.v1", f"{prefix}.orders.v1"
    async with running(settings) as (_bridge, acked):
        await eventually(lambda: acked.counts[md] >= 20, "quotes published")
        await place_orders(sim_process)
        await eventually(lambda: acked.counts[orders] >= 6, "order states published")
        process = await start_node(node, "kafka-consumer.js", "--brokers", kafka_broker, "--asyncapi",
                                   str(tmp_path / "asyncapi.json"), "--group", prefix, "--streams-from",
                                   "beginning", "--stop-file", str(stop), "--ready-file", str(ready),
                                   "--timeout-ms", "100000")  # fmt: skip
        await eventually(ready.exists, "the consumer bootstrapped", NODE_TIMEOUT_S)
        quotes = acked.counts[md]
        await place_orders(sim_process)
        published = acked.counts[orders]
        await eventually(lambda: acked.counts[orders] >= published + 6, "more order states")
        await eventually(lambda: acked.counts[md] >= quotes + 10, "more quotes")
    # every record, plus the state copy of each quote and order
    stop.write_text(json.dumps({"total": sum(acked.counts.values()) + acked.counts[md] + acked.counts[orders]}))
    report = await report_of(process)
    assert report["invalid"] == [] and not report["timedOut"]
    written = {destination for destination, count in acked.counts.items() if count}
    written |= {f"{prefix}.state.marketdata.v1", f"{prefix}.state.orders.v1"}
    assert written <= {channel["address"] for channel in document["channels"].values()}
    assert set(report["consumed"]) == written
    assert {"com.ibkr.marketdata.quote.v1", "com.ibkr.orders.order.v1", "com.ibkr.executions.execution.v1",
            "com.ibkr.bridge.lifecycle.v1"} <= set(report["types"])  # fmt: skip
    for family in ("marketdata", "orders"):
        async with KafkaReader(kafka_broker, f"{prefix}.{family}.v1") as stream:
            total = acked.counts[f"{prefix}.{family}.v1"]
            await eventually(lambda s=stream, n=total: len(s.records) >= n, f"{family} read back")  # type: ignore[misc]
        assert report["states"][f"{prefix}.state.{family}.v1"] == stream.state()


async def test_the_node_redis_consumer_group_bootstraps_follows_and_acknowledges_every_entry(
    redis_server: str, sim_process: SimProcess, node: str, node_packages: Path, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = settings_for(sim_process, tmp_path, {"url": redis_server}, prefix)
    write_document(settings, tmp_path / "asyncapi.json")
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    md, orders = f"{prefix}.marketdata.v1", f"{prefix}.orders.v1"
    async with running(settings) as (_bridge, acked):
        await eventually(lambda: acked.counts[md] >= 20, "quotes published")
        await place_orders(sim_process)
        await eventually(lambda: acked.counts[orders] >= 6, "order states published")
        process = await start_node(node, "redis-consumer.js", "--url", redis_server, "--asyncapi",
                                   str(tmp_path / "asyncapi.json"), "--group", prefix, "--streams-from", "0",
                                   "--stop-file", str(stop), "--ready-file", str(ready),
                                   "--timeout-ms", "100000")  # fmt: skip
        await eventually(ready.exists, "the consumer bootstrapped", NODE_TIMEOUT_S)
        quotes = acked.counts[md]
        await place_orders(sim_process)
        published = acked.counts[orders]
        await eventually(lambda: acked.counts[orders] >= published + 6, "more order states")
        await eventually(lambda: acked.counts[md] >= quotes + 10, "more quotes")
    stop.write_text("")  # the bridge has stopped: the consumer stops once it has caught up
    report = await report_of(process)
    assert report["invalid"] == [] and not report["timedOut"]
    client = aioredis.Redis.from_url(redis_server)
    try:
        for stream in (f"{prefix}.executions.v1", f"{prefix}.bridge.v1", f"{prefix}.pnl.v1"):
            assert report["consumed"][stream] == await client.xlen(stream)  # read from the first entry
            pending = await client.xpending(stream, prefix)
            assert pending["pending"] == 0  # every entry acknowledged
        for family in ("marketdata", "orders"):
            live, _ = await stream_state(redis_server, f"{prefix}.{family}.v1")
            assert report["states"][f"{prefix}.state.{family}.v1"] == live
            assert 0 < report["consumed"][f"{prefix}.{family}.v1"] < await client.xlen(f"{prefix}.{family}.v1")
            final = await client.hgetall(f"{prefix}.state.{family}.v1")
            assert {k.decode(): orjson.loads(v)["event"]["id"] for k, v in final.items()} == live
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
