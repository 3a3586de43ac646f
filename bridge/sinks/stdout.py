"""Stdout sink: one CloudEvents structured-mode JSON envelope per line, for dry runs and the demo.

Writes to any writable binary stream (default ``sys.stdout.buffer``); a batch
is one ``write`` and one ``flush``. A stream that can no longer be written
(closed pipe, full disk) raises :class:`SinkUnavailable`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import BinaryIO

from bridge.errors import SinkUnavailable
from bridge.sinks.base import Record

_log = logging.getLogger(__name__)


class StdoutSink:
    """JSON lines of structured envelopes."""

    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self.last_ack_ns = 0  # wall clock (time.time_ns) of the last publish written and flushed

    async def start(self) -> None:
        _log.debug("stdout sink writing to %r", self._stream)

    async def publish(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        lines = b"".join([record.structured() + b"\n" for record in batch])
        try:
            self._stream.write(lines)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed file
            raise SinkUnavailable(f"cannot write to {self._stream!r}: {exc}") from exc
        self.last_ack_ns = time.time_ns()

    async def close(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            _log.warning("stdout sink could not flush on close")
