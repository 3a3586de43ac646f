"""Subscriptions from the settings and from admin request bodies (pure).

Both name market data as ``CONID`` or ``CONID@EXCHANGE``; a body that cannot be read raises
``ValueError`` with the fix, which the admin API returns as a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.config import Settings
from bridge.ingest.subscriptions import Subscription


def desired_subscriptions(settings: Settings, default_account: str | None) -> list[Subscription]:
    """The subscriptions the settings ask for, replayed on every (re)connect."""
    subs = settings.subscriptions
    wanted = []
    for target in subs.market_data.conids:
        conid, exchange = conid_and_exchange(target)
        wanted.append(Subscription.market_data(conid, subs.market_data.fields, exchange))
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
        if account is None:
            raise ValueError(f"subscriptions.book conid {book.conid}: no account (set it or gateway.account)")
        wanted.append(Subscription.book(account, conid_and_exchange(book.conid)[0], book.exchange))
    return wanted


def conid_and_exchange(target: str) -> tuple[int, str | None]:
    conid, _, exchange = target.partition("@")
    if not conid.isdigit():
        raise ValueError(f"market data target {target!r}: expected CONID or CONID@EXCHANGE")
    return int(conid), exchange or None


def subscription_from_spec(spec: Mapping[str, Any], settings: Settings) -> Subscription:
    """A ``POST /subscriptions`` body as a subscription; defaults come from the settings."""
    kind = spec.get("type")
    if kind == "market_data":
        conid, exchange = conid_and_exchange(str(spec.get("conid", "")))
        fields = spec.get("fields") or settings.subscriptions.market_data.fields
        return Subscription.market_data(conid, [str(f) for f in fields], exchange)
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
    raise ValueError('"type" must be market_data, orders, executions, pnl, account_summary or account_ledger')
