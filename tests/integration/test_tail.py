"""``ibkr-bridge tail`` reads back what the sinks wrote, from Kafka and from Redis Streams."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import uuid

from bridge import tail
from bridge.codec import EnvelopeContext, encode
from bridge.events import Execution, Order, Quote
from bridge.routing import Router
from bridge.sinks.kafka import KafkaSink, KafkaSinkOptions
from bridge.sinks.kafka_tail import read_topics
from bridge.sinks.redis import RedisSink, RedisSinkOptions, read_streams

NOW_NS = 1_777_000_000_000_000_000


def records(suffix: str) -> list:  # type: ignore[type-arg]
    router = Router(destinations={"orders": f"orders-{suffix}", "marketdata": f"md-{suffix}",
                                  "executions": f"fills-{suffix}"})  # fmt: skip
    ctx = EnvelopeContext()
    events = [
        Quote(265598, "265598", 1777552110061, "q1", True, ("last",), {"last": 271.5, "bid": 271.4}),
        Order("DU1", 7, ("status",), False, status="Filled", filled_quantity=5.0, remaining_quantity=0.0),
        Execution("E1", "DU1", 7, True, side="BUY", size=5.0, price=271.5),
    ]
    return [encode(e, router.route(e), ctx, NOW_NS) for e in events]  # type: ignore[arg-type]


async def collect(events, types: list[str], count: int) -> list[str]:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    await asyncio.wait_for(tail.tail(events, types, out, count=count), timeout=20)
    return out.getvalue().splitlines()


async def test_tail_reads_kafka_binary_mode_records_and_filters_by_type(kafka_broker: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    options = KafkaSinkOptions(bootstrap_servers=kafka_broker, enable_idempotence=False,
                               create_topics=(f"orders-{suffix}", f"md-{suffix}", f"fills-{suffix}"))  # fmt: skip
    sink = KafkaSink(options)
    await sink.start()
    await sink.publish(records(suffix))
    await sink.close()
    topics = [f"orders-{suffix}", f"md-{suffix}", f"fills-{suffix}"]
    async with contextlib.aclosing(read_topics(options, topics, from_beginning=True)) as reader:
        lines = await collect((tail.from_kafka(*r) async for r in reader), ["orders", "execution"], 2)
    joined = "\n".join(lines)
    assert "status=Filled" in joined and "filled_quantity=5.0" in joined
    assert "execution_id=E1" in joined and "reconciled" in joined
    assert "quote" not in joined


async def test_tail_reads_redis_stream_entries(redis_server: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    options = RedisSinkOptions(url=redis_server)
    sink = RedisSink(options)
    await sink.start()
    await sink.publish(records(suffix))
    await sink.close()
    async with contextlib.aclosing(read_streams(options, [f"md-{suffix}"], from_beginning=True)) as reader:
        (line,) = await collect((tail.from_redis(*e) async for e in reader), [], 1)
    assert "265598" in line and "last=271.5" in line and "snapshot" in line


def test_tail_refuses_a_sink_it_cannot_read() -> None:
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "tail", "--sink", "stdout://"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2 and "--sink 'stdout://' is not allowed: kafka://host:port" in result.stderr
    assert "memory://" not in result.stderr and "stdout:// or" not in result.stderr  # only what tail reads
