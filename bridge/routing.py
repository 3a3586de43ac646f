"""Event -> destination and key (pure).

Destinations are one per family and major version, never one per symbol.
Names are templates: ``{family}`` expands to the event's family and ``{key}``
to the record key (only for sinks that want per-key streams).
Keys: market data (a combo by its full target), book and bars by conid; orders and executions by orderId;
PnL and account events by account alias (which defaults to the account id);
gateway and bridge lifecycle on one key so consumers see them in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.events import (
    AccountLedger,
    AccountProperties,
    AccountSummary,
    Bars,
    BookLadder,
    Bulletin,
    DeadLetter,
    Event,
    EventClass,
    Execution,
    Notification,
    Order,
    Pnl,
    Quote,
)
from bridge.ingest.wire import COMBO_SEPARATOR

DEFAULT_DESTINATIONS: dict[str, str] = {
    "marketdata": "ibkr.marketdata.v1",
    "book": "ibkr.book.v1",
    "bars": "ibkr.bars.v1",
    "orders": "ibkr.orders.v1",
    "executions": "ibkr.executions.v1",
    "pnl": "ibkr.pnl.v1",
    "account": "ibkr.account.v1",
    "notifications": "ibkr.notifications.v1",
    "bridge": "ibkr.bridge.v1",
    "dlq": "ibkr.dlq.v1",
}

GATEWAY_KEY = "gateway"
_ROUTE_CACHE_MAX = 100_000  # distinct keys per event type kept; conids and live orders fit easily


@dataclass(frozen=True, slots=True)
class Route:
    destination: str
    key: bytes
    subject: str = ""  # the key as text (the CloudEvents ``subject``)


def _conid(event: Event) -> str:
    return str(event.conid)  # type: ignore[attr-defined]


def quote_key(event: Event) -> str:
    """Conid; a combo is keyed by its full target (its ``conid_ex``, ``28812380;;;265598/1,8314/-1``),
    so two combos on one spread conid stay apart; so is a quote without a conid but with a conidEx."""
    assert isinstance(event, Quote)
    conid_ex = event.conid_ex
    if conid_ex is not None and (COMBO_SEPARATOR in conid_ex or not event.conid):
        return conid_ex
    return str(event.conid)


def _gateway_key(event: Event) -> str:
    return GATEWAY_KEY


def _execution_key(event: Event) -> str:
    assert isinstance(event, Execution)
    return str(event.order_id) if event.order_id is not None else event.execution_id


def _notification_key(event: Event) -> str:
    assert isinstance(event, Notification | Bulletin)
    return event.id or "notification"


def _dead_letter_key(event: Event) -> str:
    assert isinstance(event, DeadLetter)
    return event.topic or "dlq"


_Plan = tuple[bool, str | None, "Callable[[Event], str]", dict[str, Route]]


class Router:
    """Decides where each event goes and under which key; ``None`` means not published."""

    def __init__(
        self,
        destinations: Mapping[str, str] | None = None,
        account_aliases: Mapping[str, str] | None = None,
        publish_internal: bool = False,
    ) -> None:
        self._templates = {**DEFAULT_DESTINATIONS, **(destinations or {})}
        self._aliases = dict(account_aliases or {})
        self._publish_internal = publish_internal
        self._static = {
            family: t.replace("{family}", family) for family, t in self._templates.items() if "{key}" not in t
        }
        self._key_of: dict[type[Event], Callable[[Event], str]] = {
            Quote: quote_key,
            BookLadder: _conid,
            Bars: _conid,
            Order: lambda e: str(e.order_id),  # type: ignore[attr-defined]
            Execution: _execution_key,
            Pnl: self._account_key,
            AccountSummary: self._account_key,
            AccountLedger: self._account_key,
            AccountProperties: self._properties_key,
            Notification: _notification_key,
            Bulletin: _notification_key,
            DeadLetter: _dead_letter_key,
        }
        self._plans: dict[type[Event], _Plan] = {}
        self._quote_routes: dict[str | int, Route] = {}  # by conid_ex (else conid)

    def destination_of(self, family: str) -> str:
        """The destination of a family whose name does not depend on the key (e.g. ``dlq``)."""
        return self._static.get(family) or self._templates[family].replace("{family}", family)

    def static_destinations(self) -> list[str]:
        """Every destination known before any event arrives (for topic creation)."""
        return list(self._static.values())

    def alias(self, account: str) -> str:
        return self._aliases.get(account, account)

    def _account_key(self, event: Event) -> str:
        return self.alias(event.account)  # type: ignore[attr-defined]

    def _properties_key(self, event: Event) -> str:
        assert isinstance(event, AccountProperties)
        return self.alias(event.selected_account or "accounts")

    def route(self, event: Event) -> Route | None:
        cls = type(event)
        plan = self._plans.get(cls)
        if plan is None:
            plan = self._plans[cls] = self._plan(cls)
        published, destination, key_of, cache = plan
        if not published:
            return None
        key = key_of(event)
        route = cache.get(key)
        if route is None:
            if destination is None:
                template = self._templates[cls.FAMILY]
                destination = template.replace("{family}", cls.FAMILY).replace("{key}", key)
            route = Route(destination, key.encode(), key)
            if len(cache) >= _ROUTE_CACHE_MAX:
                cache.clear()
            cache[key] = route
        return route

    def quote_route(self, quote: Quote) -> Route | None:
        """``route(quote)`` for the bulk of the traffic, cached by conidEx (the normalizer keeps one
        string per target, so its hash is computed once), else by conid: no key text is built per
        quote, and each combo keeps its own route."""
        conid_ex = quote.conid_ex
        cache_key = conid_ex if conid_ex is not None else quote.conid
        route = self._quote_routes.get(cache_key)
        if route is None:
            route = self.route(quote)
            if route is not None:
                if len(self._quote_routes) >= _ROUTE_CACHE_MAX:
                    self._quote_routes.clear()
                self._quote_routes[cache_key] = route
        return route

    def _plan(self, cls: type[Event]) -> _Plan:
        """Per event type: published?, static destination (None if per key), key function, route cache."""
        published = cls.CLASS is not EventClass.INTERNAL or self._publish_internal
        return published, self._static.get(cls.FAMILY), self._key_of.get(cls, _gateway_key), {}
