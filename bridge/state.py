"""State destinations: the latest event per key, kept beside the streams (pure).

Market data (key conid) and orders (key orderId) are published as merged state, so the latest
event of a key *is* its state. A sink writes every record of a stream that keeps state to the
state destination too, in the same publish: on Kafka a compacted topic (the record as on the
stream), on Redis a hash (field = key, value = ``{"entry": <stream entry id>, "event":
<structured CloudEvent>}``) updated atomically with the ``XADD``.

Finished orders leave the state after a retention, and a conid's quote when its market data
subscription is removed: a tombstone is a record on the state destination without data (Kafka:
a null value, which compaction treats as a delete; Redis: the hash field deleted). Tombstones
never reach the streams, where an order's last event (status ``Filled`` or ``Cancelled``)
already says it is finished.
"""

from __future__ import annotations

from bridge.codec import SPEC_VERSION, EnvelopeContext
from bridge.events import EventClass, Order
from bridge.sinks.base import Record

# Statuses after which the gateway sends no more changes of an order (compared case-insensitively).
# ``Inactive`` is not final: the gateway reports new orders as Inactive before PendingSubmit.
FINISHED_STATUSES = frozenset({"filled", "cancelled", "apicancelled"})


def is_finished(order: Order) -> bool:
    return order.status is not None and order.status.lower() in FINISHED_STATUSES


def is_tombstone(record: Record) -> bool:
    """A record without data: its key leaves the state destination."""
    return not record.data


def tombstone(
    destination: str, key: bytes, ctx: EnvelopeContext, now_ms: int, event_type: str = Order.TYPE
) -> Record:
    """The record that removes ``key`` from the state destination ``destination`` (whose events
    are of ``event_type``)."""
    ctx.sequence += 1
    subject = key.decode()
    attributes: tuple[tuple[str, str | int], ...] = (
        ("specversion", SPEC_VERSION),
        ("id", f"{subject}:removed:{now_ms}"),
        ("source", ctx.source),
        ("type", event_type),
        ("subject", subject),
        ("time", ctx.time_text(now_ms)),
        ("sessionepoch", ctx.session_epoch),
        ("sequence", ctx.sequence),
    )
    return Record(destination, key, b"", attributes, EventClass.CRITICAL, event_type)


def quote_key_of_subscription(key: str) -> bytes | None:
    """The state key of a market data subscription key (``md:265598@SMART`` -> ``265598``; a
    combo's conidEx as it is); None for other subscriptions."""
    if not key.startswith("md:"):
        return None
    target = key[3:]
    conid = target.split("@", 1)[0]
    return (conid if conid.isdigit() else target).encode()


class FinishedOrders:
    """Keys of finished orders and when each leaves the state (``retention_ms`` after its last change)."""

    def __init__(self, retention_ms: int) -> None:
        self._retention_ms = retention_ms
        self._due: dict[bytes, int] = {}  # in order of due time: re-observed keys move to the end

    def __len__(self) -> int:
        return len(self._due)

    def observe(self, key: bytes, finished: bool, now_ms: int) -> None:
        """An order state was published: finished ones are (re)scheduled, others forgotten."""
        self._due.pop(key, None)
        if finished:
            self._due[key] = now_ms + self._retention_ms

    def expired(self, now_ms: int) -> list[bytes]:
        """Keys whose retention ran out by ``now_ms``; each is returned once."""
        keys = []
        for key, due in self._due.items():
            if due > now_ms:
                break
            keys.append(key)
        for key in keys:
            del self._due[key]
        return keys
