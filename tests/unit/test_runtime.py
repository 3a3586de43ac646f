"""The event loop `run` and `demo` run on: uvloop by default, asyncio's own when the config asks."""

from __future__ import annotations

import asyncio

import uvloop

from bridge import runtime
from bridge.config import Settings


async def _loop_kind() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_the_default_loop_is_uvloops_and_asyncio_can_be_asked_for() -> None:
    assert Settings().event_loop == "uvloop"
    assert runtime.run(_loop_kind()) is uvloop.Loop
    assert not issubclass(runtime.run(_loop_kind(), "asyncio"), uvloop.Loop)
    assert Settings.model_validate({"event_loop": "asyncio"}).event_loop == "asyncio"
