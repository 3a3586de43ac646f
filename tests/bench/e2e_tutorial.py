"""Contender 2 of ``bench_e2e``: the vendor tutorial's approach, forwarded to Kafka.

websocket-client ``WebSocketApp`` with ``CERT_NONE``, subscribe in ``on_open``; ``on_message`` ->
``json.loads`` -> one kafka-python ``KafkaProducer.send`` per message (JSON value serializer,
key conid, acks=all, idempotence off because the test broker refuses it, everything else the
library's defaults). No normalization. A delivery callback per message feeds the meter.

    python -m tests.bench.e2e_tutorial --ws-url URL --bootstrap HOST:PORT --topic T --conids 1,2 ...
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
from typing import Any

import websocket
from kafka import KafkaProducer  # type: ignore[import-untyped]

from tests.bench.e2e_meter import Meter, contender_parser, now_ms, pin_self, write_result


def main() -> None:
    args = contender_parser(__doc__ or "").parse_args()
    pin_self(args.cpu)
    meter = Meter(args.warmup_s, args.seconds, args.latency, marker=args.out.with_suffix(".open"))
    conids, fields = args.conids.split(","), args.fields.split(",")
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        enable_idempotence=False,
        key_serializer=lambda k: k.encode() if k is not None else None,
        value_serializer=lambda v: json.dumps(v).encode("utf-8"),
    )

    def acked(sent_ms: int, _metadata: Any) -> None:
        meter.acked(1, now_ms(), (sent_ms,))

    def on_open(ws: websocket.WebSocketApp) -> None:
        for conid in conids:
            ws.send("smd+" + conid + "+" + json.dumps({"fields": fields}))

    def on_message(ws: websocket.WebSocketApp, message: str) -> None:
        msg = json.loads(message)
        conid = msg.get("conid")
        future = producer.send(args.topic, key=None if conid is None else str(conid), value=msg)
        if "_updated" in msg:
            future.add_callback(acked, msg["_updated"])

    app = websocket.WebSocketApp(args.ws_url, on_open=on_open, on_message=on_message)
    reader = threading.Thread(
        target=app.run_forever, kwargs={"sslopt": {"cert_reqs": ssl.CERT_NONE}}, daemon=True
    )
    reader.start()
    if not meter.done.wait(args.warmup_s + args.seconds + 60):
        sys.exit("no acknowledgements arrived")
    write_result(args.out, meter.result())
    os._exit(0)  # threads of both libraries would keep the process alive


if __name__ == "__main__":
    main()
