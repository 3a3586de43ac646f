"""The gateway socket's inbox: whole messages collected from picows frames (pure callbacks, no I/O
of its own beyond answering a close and pausing the transport's reading).

picows hands over frames from its ``data_received``; :class:`Inbox` collects whole messages
there and the connection's serve loop takes everything collected at once.
"""

from __future__ import annotations

import asyncio
import logging

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

_TEXT, _BINARY, _CONTINUATION, _CLOSE = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION,
                                         WSMsgType.CLOSE)  # fmt: skip
_PING = WSMsgType.PING

log = logging.getLogger(__name__)


class Inbox(WSListener):
    """Whole messages received on one socket, waiting for the serve loop.

    picows calls ``on_ws_frame`` synchronously for every frame parsed from the bytes just read;
    data messages (fragmented ones reassembled) are appended as bytes, close frames answered.
    Past ``pause_at`` waiting messages the socket stops reading (TCP backpressure on the gateway)
    until the serve loop takes them.

    Pings are answered here, not by picows, so the write side stays bounded: while more than
    ``max_unsent_bytes`` wait in the socket's write buffer (the peer is not reading), a ping goes
    unanswered and is counted; a peer that keeps it that way for ``write_stall_s`` is disconnected.
    A gateway flooding pings without reading our pongs can no longer grow our memory.

    :meth:`rest` stops reading for a moment (the read cadence): frames that trickle in meanwhile
    wait in the kernel's socket buffer and are read, decrypted and handled together afterwards.
    """

    def __init__(
        self,
        max_message_bytes: int,
        pause_at: int,
        max_unsent_bytes: int = 1 << 20,
        write_stall_s: float = 10.0,
    ) -> None:
        self.messages: list[bytes] = []
        self.disconnected = False
        self.unanswered_pings = 0
        self.write_stalled = False  # disconnected because the peer stopped reading
        self._max_unsent_bytes = max_unsent_bytes
        self._write_stall_s = write_stall_s
        self._stalled_since: float | None = None
        self._max_message_bytes = max_message_bytes
        self._pause_at = pause_at
        self._transport: WSTransport | None = None
        self._paused = False  # backpressure: too many messages waiting
        self._resting = False  # the read cadence (rest)
        self._waiter: asyncio.Future[None] | None = None
        self._parts: list[bytes] | None = None  # a fragmented message being reassembled
        self._parts_bytes = 0

    # picows callbacks (synchronous, from the transport's data_received)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if (kind is _TEXT or kind is _BINARY) and frame.fin and self._parts is None:
            self.messages.append(frame.get_payload_as_bytes())
        elif kind is _TEXT or kind is _BINARY or kind is _CONTINUATION:
            self._fragment(transport, frame, first=kind is not _CONTINUATION)
        elif kind is _CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        elif kind is _PING:
            self._pong(transport, frame)
            return
        else:
            return  # PONG: consumed by picows (its auto-ping)
        if len(self.messages) >= self._pause_at and not self._paused:
            self._paused = True
            if not self._resting:  # resting: reading is paused already, and stays so once it ends
                transport.underlying_transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pong(self, transport: WSTransport, frame: WSFrame) -> None:
        unsent = transport.underlying_transport.get_write_buffer_size()
        if unsent <= self._max_unsent_bytes:
            self._stalled_since = None
            transport.send_pong(frame.get_payload_as_bytes())
            return
        self.unanswered_pings += 1
        now = asyncio.get_running_loop().time()
        if self._stalled_since is None:
            self._stalled_since = now
        elif now - self._stalled_since > self._write_stall_s and not self.write_stalled:
            self.write_stalled = True
            log.warning("gateway socket: %d bytes unsent for %.0f s while it sends pings; disconnecting",
                        unsent, now - self._stalled_since)  # fmt: skip
            transport.disconnect(graceful=False)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fragment(self, transport: WSTransport, frame: WSFrame, first: bool) -> None:
        if first == (self._parts is not None):  # RFC 6455 §5.4: no interleaving, no stray continuation
            transport.send_close(WSCloseCode.PROTOCOL_ERROR, b"unexpected fragment")
            transport.disconnect()
            return
        parts = self._parts = [] if first else self._parts
        assert parts is not None
        self._parts_bytes += frame.payload_size
        if self._parts_bytes > self._max_message_bytes:
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            transport.disconnect()
            return
        parts.append(frame.get_payload_as_bytes())
        if frame.fin:
            self.messages.append(b"".join(parts))
            self._parts, self._parts_bytes = None, 0

    # the serve loop's side

    async def take(self) -> list[bytes]:
        """Every message received so far, waiting for one if there is none; [] once the socket is
        gone and everything it delivered has been taken."""
        while not self.messages:
            if self.disconnected:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        messages, self.messages = self.messages, []
        if self._paused and self._transport is not None:
            self._paused = False
            if not self._resting:
                self._transport.underlying_transport.resume_reading()
        return messages

    async def rest(self, until: float) -> None:
        """Read nothing from the socket until loop time ``until`` (what arrives meanwhile waits in
        the kernel's buffer, or in the TLS layer's); no-op once disconnected or past ``until``."""
        transport, loop = self._transport, asyncio.get_running_loop()
        delay_s = until - loop.time()
        if transport is None or self.disconnected or delay_s <= 0:
            return
        underlying = transport.underlying_transport
        if not self._paused:
            underlying.pause_reading()
        self._resting = True
        try:
            await asyncio.sleep(delay_s)
        finally:
            self._resting = False
            if not self._paused and not self.disconnected:
                underlying.resume_reading()


def close_code(code: object) -> int:
    """A close code as a number (picows gives application codes outside its enum as plain ints)."""
    value = getattr(code, "value", code)
    return value if isinstance(value, int) else 1006
