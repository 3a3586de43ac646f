"""The event loop ``run`` and ``demo`` run on: uvloop unless the config asks for asyncio's own.

At the rates a gateway paces its frames, most of the bridge's CPU goes to waking up for each read
(select, callbacks, timers), not to the frames: ``bench_e2e`` (README, Benchmarks) measured
uvloop's C loop at 15-20 % less CPU than asyncio's at 5,000 and 20,000 frames/s and about 10 %
more frames/s flat out, with the same latency. ``event_loop: asyncio`` (``BRIDGE_EVENT_LOOP``)
switches back, e.g. to rule the loop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

EventLoop = Literal["uvloop", "asyncio"]
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], event_loop: EventLoop = "uvloop") -> T:
    """Run ``main`` to completion on a new loop of the kind asked for."""
    if event_loop == "uvloop":
        import uvloop  # a dependency on every platform the bridge supports (Linux, macOS)

        return uvloop.run(main)
    return asyncio.run(main)
