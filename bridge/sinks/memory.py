"""In-process sink for tests and dry runs: keeps every acknowledged record per destination.

It can be told to fail the way a broker does:

- :meth:`MemorySink.fail_next` raises :class:`SinkUnavailable` for the next N publishes;
- :attr:`MemorySink.down` raises it for every publish until set back to ``False``;
- :meth:`MemorySink.reject` refuses a record id for good (:class:`SinkRejected` with the
  record's index in the batch; the records before it are acknowledged, as a broker
  acknowledges a prefix);
- :meth:`MemorySink.fail_after` acknowledges the first N records of the next publish and
  then raises :class:`SinkUnavailable`, so the retried batch duplicates them
  (at-least-once delivery, as after a lost acknowledgement).

An unavailable publish acknowledges nothing else.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from bridge.errors import SinkRejected, SinkUnavailable
from bridge.sinks.base import Record

logger = logging.getLogger(__name__)


class MemorySink:
    """Keeps records in memory; see the module docstring for failure injection."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.records: dict[str, list[Record]] = defaultdict(list)
        self.published: list[Record] = []
        self.batch_sizes: list[int] = []
        self.publish_calls = 0
        self.failed_calls = 0
        self.down = False
        self.started = False
        self.closed = False
        self._fail_next = 0
        self._fail_after: int | None = None
        self._rejected: dict[str, str] = {}

    # ------------------------------------------------------------------ failure injection

    def fail_next(self, publishes: int) -> None:
        """The next ``publishes`` calls raise :class:`SinkUnavailable`."""
        self._fail_next = publishes

    def fail_after(self, records: int) -> None:
        """The next call acknowledges ``records`` records, then raises :class:`SinkUnavailable`."""
        self._fail_after = records

    def reject(self, record_id: str, reason: str = "record refused") -> None:
        """Every publish of the record with this CloudEvents ``id`` is refused for good."""
        self._rejected[record_id] = reason

    # ------------------------------------------------------------------ Sink

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def publish(self, batch: Sequence[Record]) -> None:
        self.publish_calls += 1
        if self.down or self._fail_next > 0:
            self._fail_next = max(0, self._fail_next - 1)
            self.failed_calls += 1
            raise SinkUnavailable(f"{self.name} is down")
        if self._fail_after is not None:
            accepted, self._fail_after = self._fail_after, None
            self._keep(batch[:accepted])
            self.failed_calls += 1
            raise SinkUnavailable(f"{self.name} lost the acknowledgement after {accepted} records")
        for index, record in enumerate(batch):
            reason = self._rejected.get(record.id)
            if reason is not None:
                self._keep(batch[:index])
                raise SinkRejected(f"{reason}: {record.id}", index=index)
        self._keep(batch)
        self.batch_sizes.append(len(batch))

    def _keep(self, records: Sequence[Record]) -> None:
        for record in records:
            self.records[record.destination].append(record)
        self.published.extend(records)

    # ------------------------------------------------------------------ reading back

    def ids(self, destination: str | None = None) -> list[str]:
        """Record ids in acknowledgement order (all destinations, or one)."""
        records = self.published if destination is None else self.records.get(destination, [])
        return [record.id for record in records]

    def by_key(self, destination: str) -> dict[bytes, list[Record]]:
        """Acknowledged records of one destination, grouped by key, in order."""
        grouped: dict[bytes, list[Record]] = defaultdict(list)
        for record in self.records.get(destination, []):
            grouped[record.key].append(record)
        return dict(grouped)

    def count(self) -> int:
        return len(self.published)
