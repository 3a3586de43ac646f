"""The simulator's write side of one websocket: straight to the transport, or, while the transport
has paused writing (a slow reader), queued here in order and written as it drains.

What a slow reader has not taken thus stays countable (:meth:`SocketWriter.backlog_bytes`) instead
of sinking into the TLS layer's socket buffer, which asyncio does not expose. Only public aiohttp
and asyncio API is used: the request's transport, its protocol's ``writing_paused`` and its
writer's ``drain()``.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiohttp import web


class SocketWriter:
    """Writes whole pre-encoded frames to one prepared websocket's transport, keeping their order."""

    def __init__(self, request: web.BaseRequest) -> None:
        transport = request.transport
        assert transport is not None, "no transport: the request's connection is gone"
        self.transport = transport
        self._protocol = request.protocol  # writing_paused: the transport passed its high-water mark
        self._writer = request.writer  # drain(): until the transport takes writes again
        self._waiting: deque[bytes] = deque()  # written while the transport was paused, in order
        self._waiting_bytes = 0
        self._pump: asyncio.Task[None] | None = None

    def closing(self) -> bool:
        return self.transport.is_closing()

    def must_wait(self) -> bool:
        """Whether a writer that paces itself should :meth:`wait_writable` before writing more."""
        return self._pump is not None or self._protocol.writing_paused

    def send(self, data: bytes) -> None:
        """To the transport now, or after what already waits while it has paused writing."""
        if not self._waiting and not self._protocol.writing_paused:
            self.transport.write(data)
            return
        self._waiting.append(data)
        self._waiting_bytes += len(data)
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._pump_waiting())

    def backlog_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel: those waiting here and the transport's
        buffer (TLS: the encryption layer's). Nothing is written while paused, so the TLS layer's
        own socket buffer stays within its high-water marks."""
        return self._waiting_bytes + self.transport.get_write_buffer_size()

    async def wait_writable(self) -> None:
        """Until nothing waits here and the transport takes writes (shielded: a caller cancelled
        meanwhile does not cancel the writer's drain, which another may be awaiting)."""
        while not self.closing() and self.must_wait():
            if self._pump is not None:
                await asyncio.shield(self._pump)
            else:
                drain = asyncio.ensure_future(self._writer.drain())
                drain.add_done_callback(_retrieved)  # its error, if no caller is left to take it
                await asyncio.shield(drain)

    def flush(self) -> None:
        """Everything waiting to the transport at once (before a close frame)."""
        while self._waiting and not self.closing():
            self.transport.write(self._waiting.popleft())
        self.drop()

    def drop(self) -> None:
        self._waiting.clear()
        self._waiting_bytes = 0

    async def _pump_waiting(self) -> None:
        try:
            while self._waiting and not self.closing():
                await self._writer.drain()
                if self.closing() or not self._waiting:
                    break
                data = self._waiting.popleft()
                self._waiting_bytes -= len(data)
                self.transport.write(data)
        except ConnectionError:
            self.drop()  # the socket went away: nothing waits for these bytes any more
        finally:
            self._pump = None


def _retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
