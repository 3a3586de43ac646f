"""Event -> Record: route each event, then encode it once (pure).

The one stage between the ingest core and delivery, shared by ``run`` (the bridge's event path)
and by ``replay`` (``ibkr-bridge normalize`` and the golden tests), so both produce the same
records from the same events. Quotes, the bulk of the traffic, take the router's per-conid cache
and the quote encoder; everything else goes through ``Router.route`` and ``codec.encode``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge.codec import EnvelopeContext, encode, encode_quote
from bridge.dead_letters import unencodable
from bridge.events import Event, Lifecycle, Quote
from bridge.routing import Route, Router
from bridge.sinks.base import Record


class Pipeline:
    """Routes and encodes events into records; holds the envelope state (sequence, epoch)."""

    def __init__(
        self, router: Router, envelope: EnvelopeContext, forget_quote: Callable[[int], None] | None = None
    ) -> None:
        self.router = router
        self.envelope = envelope
        self._forget_quote = forget_quote
        self.unencodable_events = 0

    def records(self, events: Sequence[Event], received_ns: int) -> list[Record]:
        """The records of ``events`` received at ``received_ns``, in order; unrouted events
        (internal ones, unless the router publishes them) yield none. An event the encoder
        refuses becomes a dead letter: never an exception out of the event path."""
        envelope, records = self.envelope, []
        route, quote_route = self.router.route, self.router.quote_route
        for event in events:
            if type(event) is Quote:
                destination = quote_route(event)
                if destination is not None:
                    try:
                        records.append(encode_quote(event, destination, envelope, received_ns))
                    except (TypeError, ValueError, OverflowError) as exc:  # a JSON writer's refusal
                        records.append(self._unencodable(event, exc, received_ns))
                continue
            if type(event) is Lifecycle and event.session_epoch != envelope.session_epoch:
                # the gateway session owns the epoch; its lifecycle events carry it, in order
                envelope.session_epoch = event.session_epoch
            destination = route(event)
            if destination is not None:
                try:
                    records.append(encode(event, destination, envelope, received_ns))
                except (TypeError, ValueError, OverflowError) as exc:  # see above
                    records.append(self._unencodable(event, exc, received_ns))
        return records

    def _unencodable(self, event: Event, exc: Exception, received_ns: int) -> Record:
        """The dead letter of an event the encoder refused; a quote's merged state is dropped
        (``forget_quote``), so the refused value cannot spoil the next quote of its conid."""
        self.unencodable_events += 1
        if type(event) is Quote and self._forget_quote is not None:
            self._forget_quote(event.conid)
        letter = unencodable(event, exc, received_ns)
        route = self.router.route(letter) or Route(self.router.destination_of("dlq"), b"encode")
        return encode(letter, route, self.envelope, received_ns)
