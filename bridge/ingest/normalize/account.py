"""Account families (pure): PnL (``spl``), summary (``ssd``), ledger (``sld``), properties (``act``).

``ssd``/``sld`` timestamps are epoch *seconds* (reference §2.7, §2.8) and become
``timestamp_ms``. A ledger row carrying only ``key`` and ``timestamp`` is "blank":
unchanged since the last message, so it yields nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.events import AccountLedger, AccountProperties, AccountSummary, Event, Pnl
from bridge.ingest.fields import ElementError, Unparsed, to_bool, to_float, to_int, to_text

PNL_KEYS: dict[str, str] = {
    "dpl": "daily_pnl",
    "nl": "net_liquidation",
    "upl": "unrealized_pnl",
    "rpl": "realized_pnl",
    "el": "excess_liquidity",
    "uel": "unrounded_excess_liquidity",
    "mv": "market_value",
}
_BLANK_ROW_KEYS = frozenset({"key", "timestamp", "acctCode", "secondKey", "severity"})
_LEDGER_META = frozenset({"key", "timestamp", "acctCode", "secondKey", "severity", "currency"})


def _seconds_to_ms(value: Any) -> int | None:
    seconds = to_int(value)
    if seconds is None:
        return None
    return seconds * 1000 if -100_000_000_000 < seconds < 100_000_000_000 else seconds  # tolerate ms


class AccountState:
    def __init__(self) -> None:
        self._pnl: dict[str, dict[str, Any]] = {}
        self._ledger: dict[tuple[str, str], dict[str, float | None]] = {}

    def pnl(self, row_key: str, row: Mapping[str, Any]) -> Event | None:
        if not isinstance(row, Mapping):
            raise ElementError(f"PnL row {row_key!r} is not an object")
        account = row_key[:-5] if row_key.endswith(".Core") else row_key
        state = self._pnl.setdefault(account, {"extra": {}})
        updates: dict[str, Any] = {}
        for raw_key, value in row.items():
            try:
                if raw_key == "rowType":
                    updates["row_type"] = to_int(value)
                elif raw_key in PNL_KEYS:
                    updates[PNL_KEYS[raw_key]] = to_float(value)
                elif state["extra"].get(raw_key) != value:
                    state["extra"][raw_key] = value
                    updates.setdefault("_extra", None)
            except Unparsed:
                raise ElementError(f"PnL {raw_key}={value!r} is not a number") from None
        changed = [k for k, v in updates.items() if k != "_extra" and (k not in state or state[k] != v)]
        for name in changed:
            state[name] = updates[name]
        if "_extra" in updates:
            changed.append("extra")
        if not changed:
            return None
        fields = {k: v for k, v in state.items() if k != "extra"}
        return Pnl(account, tuple(changed), extra=dict(state["extra"]), **fields)

    @staticmethod
    def summary(account: str, row: Mapping[str, Any]) -> Event | None:
        key = to_text(row.get("key"))
        if key is None:
            raise ElementError("summary row without key")
        if _BLANK_ROW_KEYS.issuperset(row):
            return None
        try:
            return AccountSummary(
                account=account,
                key=key,
                timestamp_ms=_seconds_to_ms(row.get("timestamp")),
                currency=to_text(row.get("currency")),
                monetary_value=to_float(row.get("monetaryValue")),
                value=to_text(row.get("value")),
                severity=to_int(row.get("severity")),
                extra={k: v for k, v in row.items() if k not in _SUMMARY_KNOWN},
            )
        except Unparsed as exc:
            raise ElementError(f"summary row {key!r}: bad value {exc}") from None

    def ledger(self, account: str, row: Mapping[str, Any]) -> Event | None:
        key = to_text(row.get("key"))
        if key is None:
            raise ElementError("ledger row without key")
        account = to_text(row.get("acctCode")) or account
        if _BLANK_ROW_KEYS.issuperset(row):
            return None
        state = self._ledger.setdefault((account, key), {})
        changed: list[str] = []
        extra: dict[str, Any] = {}
        for raw_key, value in row.items():
            if raw_key in _LEDGER_META:
                continue
            try:
                number = to_float(value)
            except Unparsed:
                extra[raw_key] = value
                continue
            if raw_key not in state or state[raw_key] != number:
                state[raw_key] = number
                changed.append(raw_key)
        if not changed and not extra:
            return None
        return AccountLedger(
            account=account,
            key=key,
            currency=to_text(row.get("secondKey")) or to_text(row.get("currency")),
            timestamp_ms=_seconds_to_ms(row.get("timestamp")),
            changed=tuple(changed),
            values=dict(state),
            extra=extra,
        )

    @staticmethod
    def properties(args: Mapping[str, Any]) -> Event:
        accounts = args.get("accounts") or []
        aliases = args.get("aliases") or {}
        server = args.get("serverInfo") or {}
        if not isinstance(accounts, list) or not isinstance(aliases, dict) or not isinstance(server, dict):
            raise ElementError("act frame with malformed accounts, aliases or serverInfo")
        props = args.get("acctProps")
        return AccountProperties(
            accounts=tuple(str(a) for a in accounts),
            selected_account=to_text(args.get("selectedAccount")),
            aliases={str(k): str(v) for k, v in aliases.items()},
            is_paper=to_bool(args.get("isPaper")),
            server_name=to_text(server.get("serverName")),
            server_version=to_text(server.get("serverVersion")),
            account_properties=props if isinstance(props, dict) else {},
        )


_SUMMARY_KNOWN = frozenset({"key", "timestamp", "currency", "monetaryValue", "value", "severity"})
