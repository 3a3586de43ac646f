"""Contender 1 of ``bench_e2e``: the bridge, as ``ibkr-bridge run --config FILE`` runs it.

The same settings loader, logging set-up and :class:`bridge.app.Bridge` as the ``run`` command
(TLS to the gateway, normalization, merged state, envelope, metrics, delivery buffer, spool,
admin server), plus one ack listener that hands the :class:`Meter` the number of quotes each
acknowledged batch carried and their ``_updated`` send times.

    python -m tests.bench.e2e_bridge --config FILE --out RESULT.json [--latency]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from bridge import runtime
from bridge.app import Bridge
from bridge.config import load_settings
from bridge.events import Quote
from bridge.logs import configure_logging
from bridge.sinks.base import Record
from tests.bench.e2e_meter import Meter, pin_self, write_result

QUOTE_TYPE = Quote.TYPE


async def serve(config: Path, meter: Meter) -> dict[str, int]:
    settings = load_settings(config)
    configure_logging(settings.logging.level, settings.logging.format)
    bridge = Bridge(settings)

    def on_acked(records: Sequence[Record], ack_ns: int) -> None:
        if meter.latency:
            sent = [r.updated_ms or 0 for r in records if r.event_type == QUOTE_TYPE]
            meter.acked(len(sent), ack_ns / 1e6, sent)
        else:  # flat out: only the count, so the measuring costs the bridge as little as it can
            meter.acked(sum(r.event_type == QUOTE_TYPE for r in records), ack_ns / 1e6)

    bridge.add_ack_listener(on_acked)
    running = asyncio.create_task(bridge.run())
    while not meter.done.is_set():
        if running.done():
            running.result()
            raise RuntimeError("the bridge stopped before the measurement ended")
        await asyncio.sleep(0.1)
    market = bridge.buffer.market
    extra = {"conflated": market.conflated_events, "dropped": market.dropped_events,
             "reconnects": bridge.meter.connects}  # fmt: skip
    bridge.stop()
    await asyncio.wait_for(running, timeout=30)
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    pin_self(args.cpu)
    meter = Meter(args.warmup_s, args.seconds, args.latency, marker=args.out.with_suffix(".open"))
    extra = runtime.run(serve(args.config, meter), load_settings(args.config).event_loop)  # as `run` does
    write_result(args.out, meter.result(**extra))


if __name__ == "__main__":
    main()
