"""Replay recorded gateway frames through the normalizer and the pipeline (pure but for the file handles).

Used by ``ibkr-bridge normalize`` and by the golden tests: one input line is one
frame's exact text; each produces the structured-mode CloudEvents of its events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, tzinfo

from bridge.codec import EnvelopeContext
from bridge.events import Control, DeadLetter, Event, EventClass
from bridge.ingest.normalize.normalizer import Normalizer
from bridge.pipeline import Pipeline
from bridge.routing import Router


@dataclass(slots=True)
class ReplayStats:
    events_by_type: Counter[str] = field(default_factory=Counter)
    lines_by_outcome: Counter[str] = field(default_factory=Counter)

    def render(self) -> str:
        lines = ["input lines by outcome:"]
        lines += [f"  {name:<16} {count:>9}" for name, count in sorted(self.lines_by_outcome.items())]
        lines.append("events by type:")
        lines += [f"  {name:<44} {count:>9}" for name, count in sorted(self.events_by_type.items())]
        return "\n".join(lines)


def line_outcome(events: list[Event]) -> str:
    """``dead_letter`` if any part failed, ``data`` if it yields a published event, else ``control``."""
    if any(isinstance(e, DeadLetter) for e in events):
        return "dead_letter"
    if any(e.CLASS is not EventClass.INTERNAL and not isinstance(e, Control) for e in events):
        return "data"
    return "control"


def replay(
    frames: Iterable[bytes],
    clock_ns: Iterator[int],
    source: str = "urn:ibkr-bridge:replay",
    stats: ReplayStats | None = None,
    bars_time_zone: tzinfo = UTC,
) -> Iterator[list[bytes]]:
    """For each frame, the structured-mode envelopes of the events it produced (``smh`` startTime
    read in ``bars_time_zone``, as ``run`` reads it in ``gateway.bars_time_zone``)."""
    normalizer = Normalizer(bars_time_zone)
    router, envelope = Router(publish_internal=True), EnvelopeContext(source=source)
    pipeline = Pipeline(router, envelope, normalizer.forget_quote)
    for frame in frames:
        received_ns = next(clock_ns)
        events = normalizer.normalize(frame, received_ns)
        if stats is not None:
            stats.lines_by_outcome[line_outcome(events)] += 1
            stats.events_by_type.update(e.TYPE for e in events)
        # publish_internal routes every event: one record per event
        yield [record.structured() for record in pipeline.records(events, received_ns)]


def fixed_clock(start_ms: int, step_ms: int = 1) -> Iterator[int]:
    """A deterministic receive clock: ``start_ms``, then one ``step_ms`` per frame."""
    now = start_ms * 1_000_000
    while True:
        yield now
        now += step_ms * 1_000_000


def read_frames(lines: Iterable[bytes]) -> Iterator[bytes]:
    """One frame per line, exact bytes without the line terminator."""
    for line in lines:
        yield line[:-1] if line.endswith(b"\n") else line
