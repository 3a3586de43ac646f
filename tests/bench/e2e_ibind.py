"""Contender 3 of ``bench_e2e``: the ibind library's ``IbkrWsClient``, its queue forwarded to Kafka.

ibind reads the socket in its own threads and puts ``MarketData`` events on a ``QueueSink``
queue (its defaults otherwise: async output sink, 10,000-event queues that drop the oldest).
ibind's router unwraps field ids to names and drops ``_updated``, the send time latency is
measured from, so a subclass copies that one key back into the event's data.
A plain asyncio loop drains the queue and awaits one aiokafka ``send`` per event (acks=all,
JSON value, key conid); a done-callback per delivery feeds the meter.

    python -m tests.bench.e2e_ibind --ws-url URL --bootstrap HOST:PORT --topic T --conids 1,2 ...
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from typing import Any

from aiokafka import AIOKafkaProducer
from ibind import IbkrClient, IbkrWsClient, QueueSink
from ibind.events import MarketData
from ibind.ibkr_ws.ibkr_router import IbkrRouter
from ibind.ibkr_ws.ibkr_subscriptions import MarketDataSubscription

from tests.bench.e2e_meter import Meter, contender_parser, now_ms, pin_self, write_result

ACCOUNT = "DU1234567"


class TimedRouter(IbkrRouter):  # type: ignore[misc]
    """ibind's default router, keeping the frame's ``_updated`` in ``MarketData.data``."""

    def _preprocess_market_data_message(self, data: dict[str, Any]) -> Any:
        event = super()._preprocess_market_data_message(data)
        if isinstance(event, MarketData) and "_updated" in data:
            event.data["_updated"] = data["_updated"]
        return event


async def forward(queue: Any, bootstrap: str, topic: str, meter: Meter) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()

    def acked(sent_ms: int, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            meter.acked(1, now_ms(), (sent_ms,))

    try:
        while not meter.done.is_set():
            event = queue.get(block=False)
            if event is None:
                await asyncio.sleep(0.0005)
                continue
            data = event.data
            delivery = await producer.send(
                topic, value=json.dumps(data).encode(), key=str(event.conid).encode()
            )
            delivery.add_done_callback(functools.partial(acked, data.get("_updated", 0)))
    finally:
        await producer.stop()


def main() -> None:
    args = contender_parser(__doc__ or "").parse_args()
    pin_self(args.cpu)
    logging.basicConfig(level=logging.ERROR)
    meter = Meter(args.warmup_s, args.seconds, args.latency, marker=args.out.with_suffix(".open"))
    base_url = args.ws_url.replace("wss://", "https://").replace("ws://", "http://").removesuffix("/ws") + "/"
    rest = IbkrClient(url=base_url, account_id=ACCOUNT, cacert=False, auto_register_shutdown=False)
    sink = QueueSink()
    queue = sink.new_queue_accessor(MarketData)
    client = IbkrWsClient(url=args.ws_url, ibkr_client=rest, account_id=ACCOUNT, cacert=False, sink=sink,
                          router=TimedRouter())  # fmt: skip
    if not client.start():
        raise SystemExit("ibind did not connect")
    fields = args.fields.split(",")
    for conid in args.conids.split(","):
        client.subscribe(MarketDataSubscription(conid=conid, fields=fields))
    asyncio.run(forward(queue, args.bootstrap, args.topic, meter))
    write_result(args.out, meter.result())
    os._exit(0)  # ibind's threads would keep the process alive


if __name__ == "__main__":
    main()
