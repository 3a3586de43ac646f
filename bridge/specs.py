"""Subscriptions from the settings and from admin request bodies (pure).

Both name market data as ``CONID``, ``CONID@EXCHANGE`` or a combo (``SPREAD;;;CONID/RATIO,...``);
a body that cannot be read raises ``ValueError`` with the fix, which the admin API returns as a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    wanted += [bars_subscription(bars.model_dump()) for bars in subs.bars]
    return wanted


def books_without_account(settings: Settings) -> list[tuple[int, str | None]]:
    """Book ladders with no account and no ``gateway.account``: (conid, exchange), subscribed once
    ``/iserver/accounts`` names the gateway's selected account."""
    if settings.gateway.account:
        return []
    return [(int(book.conid), book.exchange) for book in settings.subscriptions.book if not book.account]


def bars_subscription(spec: Mapping[str, Any]) -> Subscription:
    """A bars subscription from its config or admin form (``conid``, ``period``, ``bar``, ``source``,
    ``outside_rth``, ``stream``)."""
    conid = str(spec.get("conid", ""))
    if not conid.isdigit():
        raise ValueError(f'bars needs "conid" as digits, got {conid!r}')
    params = {"period": str(spec.get("period") or "1d"), "bar": str(spec.get("bar") or "5min"),
              "source": str(spec.get("source") or "trades"), "outsideRth": bool(spec.get("outside_rth")),
              "format": BARS_FORMAT}  # fmt: skip
    stream = spec.get("stream", True)
    if not isinstance(stream, bool):
        raise ValueError(f'bars "stream" must be true or false, got {stream!r}')
    return Subscription.bars(int(conid), params, stream)


def subscription_from_spec(
    spec: Mapping[str, Any], settings: Settings, default_account: str | None = None
) -> Subscription:
    """A ``POST /subscriptions`` body as a subscription; defaults come from the settings (and, for
    a book ladder without an account, the gateway's selected account)."""
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
