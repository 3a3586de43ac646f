"""Subscriptions from the settings and from admin request bodies (pure).

Both name market data as ``CONID``, ``CONID@EXCHANGE`` or a combo (``SPREAD;;;CONID/RATIO,...``);
a body that cannot be read raises ``ValueError`` with the fix, which the admin API returns as a 400.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bridge.config import Settings
from bridge.ingest.subscriptions import Subscription

BARS_FORMAT = "%o/%c/%h/%l/%v"  # every bar value (reference §2.2)


def desired_subscriptions(settings: Settings, default_account: str | None) -> list[Subscription]:
    """The subscriptions the settings ask for, replayed on every (re)connect; book ladders left to
    the gateway's selected account wait for it (:func:`books_without_account`)."""
    subs = settings.subscriptions
    fields = subs.market_data.fields
    wanted = [Subscription.market_target(target, fields) for target in subs.market_data.conids]
    if subs.orders:
        wanted.append(Subscription.orders())
    if subs.executions:
        wanted.append(Subscription.trades(days=subs.executions_days))
    if subs.pnl:
        wanted.append(Subscription.pnl())
    wanted += [Subscription.summary(account) for account in subs.account_summary]
    wanted += [Subscription.ledger(account) for account in subs.account_ledger]
    for book in subs.book:
        account = book.account or default_account
        if account is not None:
            wanted.append(Subscription.book(account, int(book.conid), book.exchange))
    wanted += [bars_of(int(b.conid), b.period, b.bar, b.source, b.outside_rth, b.stream) for b in subs.bars]
    return wanted


def books_without_account(settings: Settings) -> list[tuple[int, str | None]]:
    """Book ladders with no account and no ``gateway.account``: (conid, exchange), subscribed once
    ``/iserver/accounts`` names the gateway's selected account."""
    if settings.gateway.account:
        return []
    return [(int(book.conid), book.exchange) for book in settings.subscriptions.book if not book.account]


def bars_subscription(spec: Mapping[str, Any]) -> Subscription:
    """A bars subscription from its admin form (``conid``, ``period``, ``bar``, ``source``,
    ``outside_rth``, ``stream``; the settings' ``subscriptions.bars`` entries have the same keys)."""
    conid = str(spec.get("conid", ""))
    if not conid.isdigit():
        raise ValueError(f'bars needs "conid" as digits, got {conid!r}')
    stream = spec.get("stream", True)
    if not isinstance(stream, bool):
        raise ValueError(f'bars "stream" must be true or false, got {stream!r}')
    return bars_of(int(conid), str(spec.get("period") or "1d"), str(spec.get("bar") or "5min"),
                   str(spec.get("source") or "trades"), bool(spec.get("outside_rth")), stream)  # fmt: skip


def bars_of(conid: int, period: str, bar: str, source: str, outside_rth: bool, stream: bool) -> Subscription:
    """The bars subscription itself: every bar value asked for (``BARS_FORMAT``)."""
    params = {"period": period, "bar": bar, "source": source, "outsideRth": outside_rth,
              "format": BARS_FORMAT}  # fmt: skip
    return Subscription.bars(conid, params, stream)


class SpecError(ValueError):
    """An admin request body that cannot be used; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def _conid_or_target(value: Any) -> str | None:
    if (type(value) is int and value > 0) or (isinstance(value, str) and value):
        return None
    return 'must be a conid (digits), "CONID@EXCHANGE" or a combo target, as a string or a number'


def _field_ids(value: Any) -> str | None:
    if not isinstance(value, list) or not all(
        (type(f) is int and f >= 0) or (isinstance(f, str) and f.isdigit()) for f in value
    ):
        return 'must be a list of market data field codes, e.g. ["31", "84", "86"]'
    return None


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


# type -> ({field: check}, required fields): one entry per subscription type, so a new type
# brings its own rules; a body's unknown keys are refused, never ignored.
_SPEC_RULES: dict[str, tuple[dict[str, Callable[[Any], str | None]], frozenset[str]]] = {
    "market_data": ({"conid": _conid_or_target, "fields": _field_ids}, frozenset({"conid"})),
    "orders": ({}, frozenset()),
    "executions": ({}, frozenset()),
    "pnl": ({}, frozenset()),
    "account_summary": ({"account": _text}, frozenset({"account"})),
    "account_ledger": ({"account": _text}, frozenset({"account"})),
    "bars": (
        {"conid": _conid_or_target, "period": _text, "bar": _text, "source": _text, "outside_rth": _flag,
         "stream": _flag},
        frozenset({"conid"}),
    ),
    "book": ({"conid": _conid_or_target, "exchange": _text, "account": _text}, frozenset({"conid"})),
}


def validate_subscribe(spec: Mapping[str, Any]) -> None:
    """Check a ``POST /subscriptions`` body against its type's rules; :class:`SpecError` names
    the first field that is missing, unknown or of the wrong type."""
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _SPEC_RULES:
        raise SpecError("type", f"must be one of {', '.join(_SPEC_RULES)}")
    checks, required = _SPEC_RULES[kind]
    for name in sorted(required - spec.keys()):
        raise SpecError(name, f"is required for type {kind}")
    for name, value in spec.items():
        if name == "type":
            continue
        check = checks.get(name)
        if check is None:
            allowed = ", ".join(checks) or "no other field"
            raise SpecError(name, f"is not a field of type {kind} (it takes {allowed})")
        problem = check(value)
        if problem is not None:
            raise SpecError(name, f"{problem}, got {_shown(value)}")


def validate_unsubscribe(spec: Mapping[str, Any]) -> None:
    """Check a ``DELETE /subscriptions`` body: ``{"key": "md:265598"}`` and nothing else."""
    for name in spec:
        if name != "key":
            raise SpecError(name, 'is not a field of an unsubscribe request (it takes only "key")')
    if not isinstance(spec.get("key"), str) or not spec["key"]:
        raise SpecError("key", 'is required, e.g. {"key": "md:265598"} (see GET /subscriptions)')


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def subscription_from_spec(
    spec: Mapping[str, Any], settings: Settings, default_account: str | None = None
) -> Subscription:
    """A ``POST /subscriptions`` body as a subscription; defaults come from the settings (and, for
    a book ladder without an account, the gateway's selected account)."""
    validate_subscribe(spec)
    kind = spec.get("type")
    if kind == "market_data":
        fields = spec.get("fields") or settings.subscriptions.market_data.fields
        return Subscription.market_target(str(spec.get("conid", "")), [str(f) for f in fields])
    if kind == "orders":
        return Subscription.orders()
    if kind == "executions":
        return Subscription.trades(days=settings.subscriptions.executions_days)
    if kind == "pnl":
        return Subscription.pnl()
    if kind in ("account_summary", "account_ledger"):
        account = spec.get("account")
        if not isinstance(account, str):
            raise ValueError(f'{kind} needs "account"')
        return Subscription.summary(account) if kind == "account_summary" else Subscription.ledger(account)
    if kind == "bars":
        return bars_subscription(spec)
    if kind == "book":
        return _book(spec, settings.gateway.account or default_account)
    raise ValueError(
        '"type" must be market_data, orders, executions, pnl, account_summary, account_ledger, bars or book'
    )


def _book(spec: Mapping[str, Any], default_account: str | None) -> Subscription:
    conid, exchange, account = str(spec.get("conid", "")), spec.get("exchange"), spec.get("account")
    if not conid.isdigit():
        raise ValueError(f'book needs "conid" as digits, got {conid!r}')
    if exchange is not None and not isinstance(exchange, str):
        raise ValueError(f'book "exchange" must be a string, got {exchange!r}')
    if account is None:
        account = default_account
    if not isinstance(account, str) or not account:
        raise ValueError('book needs "account": the gateway has not named its selected account yet')
    return Subscription.book(account, int(conid), exchange or None)
