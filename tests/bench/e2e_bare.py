"""Contender 4 of ``bench_e2e``: the bare pipeline of perf-limits §5, the ceiling reference.

Only what any websockets -> Kafka forwarder has to do, done the fast way: one asyncio reader
(the ``websockets`` library, ``compression=None``, ``decode=False``, the same TLS to the same
simulator) -> ``orjson.loads`` -> ``orjson.dumps`` of a small dict (conid, ``_updated`` and the
subscribed field ids the frame carries) -> aiokafka's batch API. No normalization, envelope,
headers, metrics or logging.

- Frames websockets has already received are taken from its queue without an await each.
- One ``create_batch()`` builder per partition; the partition is aiokafka's
  ``DefaultPartitioner`` (Kafka's murmur2 of the key, the conid), computed once per conid.
- A builder ships when it fills or on a 5 ms tick, whichever comes first: swapped out
  synchronously onto its partition's FIFO, whose one sender task awaits ``send_batch``, so
  batches of a partition go out in order and no record is awaited on its own. The tick ships
  only to an empty FIFO (else the sender ships the overdue builder as soon as it takes the
  queued one): while the broker is behind, builders grow instead of queueing up small, and a
  reader that fills one behind a queued one waits (bounded memory).
- acks=all, zstd (the bridge's default), 256 KiB batches, linger 0, idempotence off (the test
  broker refuses it).
- Each delivery's done-callback hands the :class:`Meter` its frame count and ``_updated`` times.
  At the end the reader stops, every builder ships and every delivery is awaited (drain).

    python -m tests.bench.e2e_bare --ws-url URL --bootstrap HOST:PORT --topic T --conids 1,2 ...
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Opcode

from tests.bench.e2e_meter import Meter, contender_parser, now_ms, pin_self, write_result

FLUSH_TICK_S = 0.005
MAX_BATCH_BYTES = 262_144  # as the bridge's kafka.max_batch_bytes
_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY)

Batch = tuple[Any, int, list[int]]  # closed builder, frames in it, their ``_updated`` (ms)


class Lane:
    """One partition: the builder being filled and the FIFO of closed ones its sender ships."""

    __slots__ = ("append", "builder", "create", "frames", "outbox", "overdue", "partition", "sent_ms")

    def __init__(self, partition: int, create: Callable[[], Any]) -> None:
        self.partition = partition
        self.create = create
        self.outbox: asyncio.Queue[Batch] = asyncio.Queue()
        self._fresh()

    def _fresh(self) -> None:
        self.builder = self.create()
        self.append = self.builder.append
        self.frames = 0
        self.sent_ms: list[int] = []
        self.overdue = False  # a tick found the FIFO busy: ship as soon as it is empty

    def ship(self) -> None:
        """Close the builder and queue it (synchronous, so the partition's order holds)."""
        if self.frames:
            self.builder.close()
            self.outbox.put_nowait((self.builder, self.frames, self.sent_ms))
            self._fresh()


class BarePipeline:
    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: list[int], fields: list[str],
                 meter: Meter) -> None:  # fmt: skip
        self.producer = producer
        self.topic = topic
        self.meter = meter
        self.lanes = [Lane(p, producer.create_batch) for p in partitions]
        self._partitions = partitions
        self._keep = frozenset(fields) | {"conid", "_updated"}
        self._routes: dict[int, tuple[bytes, Lane]] = {}
        self._deliveries: set[asyncio.Future[Any]] = set()
        self.skipped_frames = 0  # frames without a conid (system, act, sts, ...)
        self.failed_frames = 0
        self.error: BaseException | None = None

    def _route(self, conid: int) -> tuple[bytes, Lane]:
        key = b"%d" % conid
        partition = DefaultPartitioner()(key, self._partitions, self._partitions)
        route = self._routes[conid] = (key, self.lanes[self._partitions.index(partition)])
        return route

    async def read(self, ws: ClientConnection) -> None:
        """Frames to builders until cancelled; everything already received is handled in one go."""
        loads, dumps, keep, routes = orjson.loads, orjson.dumps, self._keep, self._routes
        assembler: Any = ws.recv_messages
        waiting = assembler.frames.queue
        while True:
            data: bytes | None = await ws.recv(decode=False)
            full: Lane | None = None
            while data is not None:
                msg = loads(data)
                conid = msg.get("conid") if type(msg) is dict else None
                if conid is None:
                    self.skipped_frames += 1
                else:
                    key, lane = routes.get(conid) or self._route(conid)
                    value = dumps({k: v for k, v in msg.items() if k in keep})
                    if lane.append(timestamp=None, key=key, value=value) is None:
                        lane.ship()
                        lane.append(timestamp=None, key=key, value=value)
                        if lane.outbox.qsize() > 1:
                            full = lane
                    lane.frames += 1
                    updated = msg.get("_updated")
                    if updated is not None:
                        lane.sent_ms.append(updated)
                data = None
                if waiting and not assembler.get_in_progress:
                    frame = waiting[0]
                    if frame.fin and frame.opcode in _DATA_OPCODES:
                        waiting.popleft()
                        assembler.maybe_resume()
                        data = frame.data if type(frame.data) is bytes else bytes(frame.data)
            if full is not None:
                await full.outbox.join()  # backpressure: the broker is behind

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_TICK_S)
            for lane in self.lanes:
                if lane.outbox.empty():
                    lane.ship()
                elif lane.frames:
                    lane.overdue = True

    async def send(self, lane: Lane) -> None:
        """Ship the lane's batches in order; one ``send_batch`` await per batch, never per record."""
        while True:
            builder, frames, sent_ms = await lane.outbox.get()
            try:
                if self.error is None:
                    delivery = await self.producer.send_batch(builder, self.topic, partition=lane.partition)
                    self._deliveries.add(delivery)
                    delivery.add_done_callback(functools.partial(self._delivered, frames, sent_ms))
                else:
                    self.failed_frames += frames
            except Exception as exc:  # noqa: BLE001 - reported after the drain
                self.error, self.failed_frames = exc, self.failed_frames + frames
            finally:
                lane.outbox.task_done()
            if lane.overdue and lane.outbox.empty():
                lane.ship()

    def _delivered(self, frames: int, sent_ms: list[int], delivery: asyncio.Future[Any]) -> None:
        self._deliveries.discard(delivery)
        if delivery.cancelled() or delivery.exception() is not None:
            self.failed_frames += frames
            self.error = self.error or (None if delivery.cancelled() else delivery.exception())
        else:
            self.meter.acked(frames, now_ms(), sent_ms)

    async def drain(self) -> None:
        """Ship every builder, wait until each batch is submitted and acknowledged."""
        for lane in self.lanes:
            lane.ship()
        await asyncio.gather(*(lane.outbox.join() for lane in self.lanes))
        await asyncio.gather(*self._deliveries, return_exceptions=True)


async def forward(args: Any, meter: Meter) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=False,
                                compression_type="zstd", linger_ms=0, max_batch_size=MAX_BATCH_BYTES)  # fmt: skip
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(args.topic))
        fields = args.fields.split(",")
        pipeline = BarePipeline(producer, args.topic, partitions, fields, meter)
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the simulator's self-signed certificate
        async with connect(args.ws_url, ssl=tls, compression=None, proxy=None) as ws:
            subscribe = json.dumps({"fields": fields})
            for conid in args.conids.split(","):
                await ws.send(f"smd+{conid}+{subscribe}")
            tasks = [asyncio.create_task(pipeline.read(ws)), asyncio.create_task(pipeline.tick()),
                     *(asyncio.create_task(pipeline.send(lane)) for lane in pipeline.lanes)]  # fmt: skip
            reader = tasks[0]
            while not meter.done.is_set() and not reader.done():  # the meter's thread sets done
                await asyncio.wait({reader}, timeout=0.1)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader  # raises what stopped the reader early, if anything did
            await pipeline.drain()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await producer.stop()
    if pipeline.error is not None:
        raise RuntimeError(f"{pipeline.failed_frames} frames not delivered") from pipeline.error
    return {"skipped_frames": pipeline.skipped_frames, "failed_frames": pipeline.failed_frames}


def main() -> None:
    args = contender_parser(__doc__ or "").parse_args()
    pin_self(args.cpu)
    meter = Meter(args.warmup_s, args.seconds, args.latency, marker=args.out.with_suffix(".open"))
    extra = asyncio.run(forward(args, meter))
    write_result(args.out, meter.result(**extra))


if __name__ == "__main__":
    main()
