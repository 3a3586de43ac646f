"""The gateway socket's inbox: whole messages out of picows frames, close answered, reading paused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from picows import WSCloseCode, WSMsgType
from picows.picows import _make_test_ws_frame

from bridge.gateway.inbox import Inbox


@dataclass
class FakeUnderlying:
    paused: int = 0
    resumed: int = 0
    unsent_bytes: int = 0

    def get_write_buffer_size(self) -> int:
        return self.unsent_bytes

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1


@dataclass
class FakeTransport:
    underlying_transport: FakeUnderlying = field(default_factory=FakeUnderlying)
    closes: list[tuple[WSCloseCode, bytes | None]] = field(default_factory=list)
    disconnects: int = 0
    pongs: list[bytes] = field(default_factory=list)

    def send_pong(self, message: bytes = b"") -> None:
        self.pongs.append(message)

    def send_close(self, code: WSCloseCode, message: bytes | None = None) -> None:
        self.closes.append((code, message))

    def disconnect(self, graceful: bool = True) -> None:
        self.disconnects += 1


def frame(kind: WSMsgType, payload: bytes, fin: bool = True):  # type: ignore[no-untyped-def]
    return _make_test_ws_frame(kind, payload, fin, False)


def inbox(pause_at: int = 100, max_bytes: int = 1000) -> tuple[Inbox, FakeTransport]:
    box, transport = Inbox(max_bytes, pause_at), FakeTransport()
    box.on_ws_connected(transport)  # type: ignore[arg-type]
    return box, transport


def feed(box: Inbox, transport: FakeTransport, *frames: object) -> None:
    for f in frames:
        box.on_ws_frame(transport, f)  # type: ignore[arg-type]


def test_text_and_binary_messages_are_queued_as_bytes_in_order() -> None:
    box, t = inbox()
    feed(box, t, frame(WSMsgType.TEXT, b'{"topic":"system"}'), frame(WSMsgType.BINARY, b'{"a":1}'))
    assert box.messages == [b'{"topic":"system"}', b'{"a":1}']


def test_fragmented_message_is_reassembled_and_control_frames_are_not_queued() -> None:
    box, t = inbox()
    feed(box, t, frame(WSMsgType.TEXT, b'{"topic":', fin=False), frame(WSMsgType.PING, b""),
         frame(WSMsgType.CONTINUATION, b'"smd+1",', fin=False), frame(WSMsgType.CONTINUATION, b'"31":"1"}'),
         frame(WSMsgType.TEXT, b"next"))  # fmt: skip
    assert box.messages == [b'{"topic":"smd+1","31":"1"}', b"next"]
    assert t.closes == []


def test_stray_continuation_and_interleaved_data_frame_close_the_socket_as_protocol_errors() -> None:
    box, t = inbox()
    feed(box, t, frame(WSMsgType.CONTINUATION, b"x"))
    assert t.closes[0][0] is WSCloseCode.PROTOCOL_ERROR and t.disconnects == 1
    box, t = inbox()
    feed(box, t, frame(WSMsgType.TEXT, b"a", fin=False), frame(WSMsgType.TEXT, b"b"))
    assert t.closes[0][0] is WSCloseCode.PROTOCOL_ERROR and box.messages == []


def test_fragments_beyond_the_message_limit_close_the_socket() -> None:
    box, t = inbox(max_bytes=10)
    feed(box, t, frame(WSMsgType.TEXT, b"123456", fin=False), frame(WSMsgType.CONTINUATION, b"789012"))
    assert t.closes == [(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")] and box.messages == []


def test_close_frame_is_answered_with_its_code_and_the_socket_dropped() -> None:
    box, t = inbox()
    close = _make_test_ws_frame(WSMsgType.CLOSE, b"\x03\xe8bye", True, False)
    feed(box, t, close)
    assert t.closes == [(WSCloseCode.OK, b"bye")] and t.disconnects == 1


async def test_reading_pauses_at_the_limit_and_resumes_when_the_serve_loop_takes() -> None:
    box, t = inbox(pause_at=3)
    feed(box, t, *(frame(WSMsgType.TEXT, b"%d" % i) for i in range(5)))
    assert t.underlying_transport.paused == 1  # once, at the third message
    assert await box.take() == [b"0", b"1", b"2", b"3", b"4"]
    assert t.underlying_transport.resumed == 1 and box.messages == []


async def test_a_rest_stops_reading_until_its_deadline_and_keeps_what_arrives_meanwhile() -> None:
    box, t = inbox()
    loop = asyncio.get_running_loop()
    until = loop.time() + 0.02
    resting = asyncio.create_task(box.rest(until))
    await asyncio.sleep(0)
    assert (t.underlying_transport.paused, t.underlying_transport.resumed) == (1, 0)
    feed(box, t, frame(WSMsgType.TEXT, b"in the TLS layer already"))  # read before the pause took hold
    await resting
    assert loop.time() >= until
    assert (t.underlying_transport.paused, t.underlying_transport.resumed) == (1, 1)
    assert await box.take() == [b"in the TLS layer already"]


async def test_a_rest_past_its_deadline_or_after_the_drop_does_not_touch_the_socket() -> None:
    box, t = inbox()
    await box.rest(asyncio.get_running_loop().time() - 1)
    box.on_ws_disconnected(t)  # type: ignore[arg-type]
    await box.rest(asyncio.get_running_loop().time() + 10)  # returns at once
    assert (t.underlying_transport.paused, t.underlying_transport.resumed) == (0, 0)


async def test_backpressure_during_a_rest_keeps_reading_paused_until_the_serve_loop_takes() -> None:
    box, t = inbox(pause_at=2)
    resting = asyncio.create_task(box.rest(asyncio.get_running_loop().time() + 0.01))
    await asyncio.sleep(0)
    feed(box, t, *(frame(WSMsgType.TEXT, b"%d" % i) for i in range(3)))  # past pause_at while resting
    await resting
    assert (t.underlying_transport.paused, t.underlying_transport.resumed) == (1, 0)  # still paused
    assert await box.take() == [b"0", b"1", b"2"]
    assert t.underlying_transport.resumed == 1


async def test_a_rest_while_paused_by_backpressure_leaves_the_socket_to_the_serve_loop() -> None:
    box, t = inbox(pause_at=2)
    feed(box, t, *(frame(WSMsgType.TEXT, b"%d" % i) for i in range(2)))
    assert t.underlying_transport.paused == 1
    await box.rest(asyncio.get_running_loop().time() + 0.01)
    assert (t.underlying_transport.paused, t.underlying_transport.resumed) == (1, 0)
    assert await box.take() == [b"0", b"1"]
    assert t.underlying_transport.resumed == 1


async def test_take_waits_for_a_message_and_returns_empty_once_disconnected_and_drained() -> None:
    box, t = inbox()
    waiting = asyncio.create_task(box.take())
    await asyncio.sleep(0)
    assert not waiting.done()
    feed(box, t, frame(WSMsgType.TEXT, b"late"))
    assert await waiting == [b"late"]
    feed(box, t, frame(WSMsgType.TEXT, b"last"))
    box.on_ws_disconnected(t)  # type: ignore[arg-type]
    assert await box.take() == [b"last"]  # what arrived before the drop is still handed over
    assert await box.take() == []


def test_pings_are_answered_while_the_peer_reads_our_socket() -> None:
    box, t = inbox()
    feed(box, t, frame(WSMsgType.PING, b"a"), frame(WSMsgType.PING, b"b"))
    assert t.pongs == [b"a", b"b"] and box.unanswered_pings == 0


async def test_pings_go_unanswered_past_the_write_buffer_bound_and_a_peer_that_never_reads_is_dropped() -> None:
    box, t = Inbox(1000, 100, max_unsent_bytes=1024, write_stall_s=0.05), FakeTransport()
    box.on_ws_connected(t)  # type: ignore[arg-type]
    t.underlying_transport.unsent_bytes = 4096  # the peer stopped reading our pongs
    feed(box, t, *[frame(WSMsgType.PING, b"p") for _ in range(1000)])
    assert t.pongs == [] and box.unanswered_pings == 1000 and t.disconnects == 0
    await asyncio.sleep(0.1)
    feed(box, t, frame(WSMsgType.PING, b"p"))
    assert box.write_stalled and t.disconnects == 1
