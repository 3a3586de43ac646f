"""Event types: what consumers receive.

Every event is a frozen, slotted dataclass with three class-level facts:

- ``TYPE``: the CloudEvents ``type``, carrying the major version
  (``com.ibkr.marketdata.quote.v1``). A compatible change adds an optional
  field; anything else is a new class with a new major version.
- ``FAMILY``: picks the default destination (``ibkr.<family>.v1``).
- ``CLASS``: the delivery class (:class:`EventClass`), which decides what
  happens under backpressure.

Field names are snake_case; times are integers with their unit in the name
(``updated_ms``); absent or unknown values are ``None``, never 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

Scalar: TypeAlias = str | int | float | bool | None


class EventClass(enum.Enum):
    """Delivery class of an event."""

    MARKET_DATA = "market_data"  # bounded, conflated per key when backlogged
    CRITICAL = "critical"  # never dropped: memory, then the on-disk spool
    INTERNAL = "internal"  # consumed by the bridge itself; not published by default


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; carries no fields of its own."""

    TYPE: ClassVar[str] = ""
    FAMILY: ClassVar[str] = ""
    CLASS: ClassVar[EventClass] = EventClass.INTERNAL


# --------------------------------------------------------------------------- market data


@dataclass(frozen=True, slots=True)
class MarketDataAvailability:
    """Field 6509 decoded (reference §4): timeline, snapshot/consolidated, book."""

    code: str
    timeline: str | None  # realtime, delayed, frozen, frozen_delayed, not_subscribed, ...
    snapshot_available: bool | None
    consolidated: bool | None
    top_of_book: bool | None


@dataclass(frozen=True, slots=True)
class Quote(Event):
    """Merged top-of-book state for one conid, with the fields this frame changed."""

    TYPE: ClassVar[str] = "com.ibkr.marketdata.quote.v1"
    FAMILY: ClassVar[str] = "marketdata"
    CLASS: ClassVar[EventClass] = EventClass.MARKET_DATA

    conid: int
    conid_ex: str | None
    updated_ms: int | None
    server_id: str | None
    snapshot: bool
    changed: tuple[str, ...]
    values: dict[str, Scalar]
    revision: int = 0  # n-th distinct frame for this conid within the same ``updated_ms``
    last_is_prior_close: bool = False
    halted: bool = False
    availability: MarketDataAvailability | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BookRow:
    row: int
    focus: bool
    price: float | None
    last_size: float | None
    bid_size: float | None
    ask_size: float | None


@dataclass(frozen=True, slots=True)
class BookLadder(Event):
    """A full BookTrader price ladder (``sbd``), replacing the previous one."""

    TYPE: ClassVar[str] = "com.ibkr.marketdata.book.v1"
    FAMILY: ClassVar[str] = "book"
    CLASS: ClassVar[EventClass] = EventClass.MARKET_DATA

    account: str | None
    conid: int
    exchange: str | None
    rows: tuple[BookRow, ...]


@dataclass(frozen=True, slots=True)
class Bar:
    time_ms: int
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None


@dataclass(frozen=True, slots=True)
class BarExtreme:
    """The ``high``/``low`` summary strings: ``<price * priceFactor>/<volume>/<minutes from start>``."""

    price: float | None
    volume: float | None
    minutes_from_start: int | None


@dataclass(frozen=True, slots=True)
class Bars(Event):
    """Historical bars delivered on ``smh``: the first answer (``bars``), or a partial update.

    The live gateway's first answer carries no per-bar ``t``: bar ``i`` then starts at
    ``startTime + i * barLength`` with ``startTime`` read in ``time_zone`` (``bar_times`` says
    ``derived``; ``sent`` when every bar had its own ``t``). The ``tickNum`` frames that follow are
    ``partial`` updates: ``tick_num`` and their ``data`` elements exactly as sent (``partial_data``),
    with ``bars`` empty; what their values mean is not documented.
    """

    TYPE: ClassVar[str] = "com.ibkr.marketdata.bars.v1"
    FAMILY: ClassVar[str] = "bars"
    # Never conflated: an answer (or an update after it) is not a state that the next one
    # replaces, and a backlog must not turn a history answer into its latest partial update.
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    conid: int
    server_id: str | None
    symbol: str | None
    text: str | None
    price_factor: float | None
    start_time: str | None
    time_period: str | None
    bar_length_s: int | None
    md_availability: str | None
    high: BarExtreme | None
    low: BarExtreme | None
    bars: tuple[Bar, ...]
    points: int | None = None
    start_time_ms: int | None = None  # ``start_time`` read in ``time_zone``
    time_zone: str | None = None  # the zone assumed for ``start_time`` (the frames carry none)
    bar_times: str | None = None  # "sent" (each bar's ``t``) or "derived" (startTime + i * barLength)
    partial: bool = False
    tick_num: int | None = None
    partial_data: tuple[dict[str, Any], ...] = ()


# --------------------------------------------------------------------------- orders and executions


@dataclass(frozen=True, slots=True)
class Order(Event):
    """Full last-known state of one order (sparse ``sor`` deltas merged)."""

    TYPE: ClassVar[str] = "com.ibkr.orders.order.v1"
    FAMILY: ClassVar[str] = "orders"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    account: str
    order_id: int
    changed: tuple[str, ...]
    reconciled: bool
    status: str | None = None
    ccp_status: str | None = None
    conid: int | None = None
    conid_ex: str | None = None
    symbol: str | None = None
    sec_type: str | None = None
    listing_exchange: str | None = None
    company_name: str | None = None
    description: str | None = None
    side: str | None = None
    order_type: str | None = None
    orig_order_type: str | None = None
    time_in_force: str | None = None
    outside_rth: bool | None = None
    price: float | None = None
    avg_price: float | None = None
    total_size: float | None = None
    filled_quantity: float | None = None
    remaining_quantity: float | None = None
    size_and_fills: str | None = None
    order_ref: str | None = None
    cash_ccy: str | None = None
    last_execution_time_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Execution(Event):
    """One fill, keyed by ``execution_id``; a later copy adding ``commission`` updates it."""

    TYPE: ClassVar[str] = "com.ibkr.executions.execution.v1"
    FAMILY: ClassVar[str] = "executions"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    execution_id: str
    account: str | None
    order_id: int | None
    reconciled: bool
    conid: int | None = None
    conid_ex: str | None = None
    symbol: str | None = None
    side: str | None = None
    size: float | None = None
    price: float | None = None
    commission: float | None = None
    net_amount: float | None = None
    exchange: str | None = None
    trade_time_ms: int | None = None
    order_ref: str | None = None
    sec_type: str | None = None
    listing_exchange: str | None = None
    company_name: str | None = None
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- account


@dataclass(frozen=True, slots=True)
class Pnl(Event):
    """Merged ``<acct>.Core`` PnL row from ``spl``."""

    TYPE: ClassVar[str] = "com.ibkr.account.pnl.v1"
    FAMILY: ClassVar[str] = "pnl"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    account: str
    changed: tuple[str, ...]
    row_type: int | None = None
    daily_pnl: float | None = None
    net_liquidation: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None
    excess_liquidity: float | None = None
    unrounded_excess_liquidity: float | None = None
    market_value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountSummary(Event):
    """One non-blank ``ssd`` row."""

    TYPE: ClassVar[str] = "com.ibkr.account.summary.v1"
    FAMILY: ClassVar[str] = "account"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    account: str
    key: str
    timestamp_ms: int | None
    currency: str | None = None
    monetary_value: float | None = None
    value: str | None = None
    severity: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountLedger(Event):
    """Merged ledger row (one currency) from ``sld``."""

    TYPE: ClassVar[str] = "com.ibkr.account.ledger.v1"
    FAMILY: ClassVar[str] = "account"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    account: str
    key: str
    currency: str | None
    timestamp_ms: int | None
    changed: tuple[str, ...]
    values: dict[str, float | None]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountProperties(Event):
    """The ``act`` frame: accounts, aliases, properties."""

    TYPE: ClassVar[str] = "com.ibkr.account.properties.v1"
    FAMILY: ClassVar[str] = "account"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    accounts: tuple[str, ...]
    selected_account: str | None
    aliases: dict[str, str]
    is_paper: bool | None
    server_name: str | None
    server_version: str | None
    account_properties: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- notifications


@dataclass(frozen=True, slots=True)
class Notification(Event):
    """One ``ntf`` notification (the frame may carry an object or a list)."""

    TYPE: ClassVar[str] = "com.ibkr.notifications.notification.v1"
    FAMILY: ClassVar[str] = "notifications"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    id: str | None
    text: str | None
    title: str | None
    url: str | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bulletin(Event):
    """A ``blt`` bulletin: urgent exchange or system message."""

    TYPE: ClassVar[str] = "com.ibkr.notifications.bulletin.v1"
    FAMILY: ClassVar[str] = "notifications"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    id: str | None
    message: str | None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- gateway session


@dataclass(frozen=True, slots=True)
class AuthStatus(Event):
    """An ``sts`` frame. Keys absent from the frame are ``None`` (absent is not false)."""

    TYPE: ClassVar[str] = "com.ibkr.gateway.status.v1"
    FAMILY: ClassVar[str] = "bridge"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    authenticated: bool | None = None
    competing: bool | None = None
    connected: bool | None = None
    established: bool | None = None
    message: str | None = None
    fail: str | None = None
    server_name: str | None = None
    server_version: str | None = None
    username: str | None = None


@dataclass(frozen=True, slots=True)
class SystemLogin(Event):
    """``system`` login confirmation (``success``)."""

    TYPE: ClassVar[str] = "com.ibkr.gateway.login.v1"
    FAMILY: ClassVar[str] = "bridge"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    username: str
    is_ft: bool | None = None
    is_paper: bool | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat(Event):
    """``system`` heartbeat (``hb``, epoch ms)."""

    TYPE: ClassVar[str] = "com.ibkr.gateway.heartbeat.v1"
    FAMILY: ClassVar[str] = "bridge"
    CLASS: ClassVar[EventClass] = EventClass.INTERNAL

    hb_ms: int | None


@dataclass(frozen=True, slots=True)
class TickleReply(Event):
    """A fresh ``tic`` reply (duplicates with the same ``lastAccessed`` collapse to a Control)."""

    TYPE: ClassVar[str] = "com.ibkr.gateway.tic.v1"
    FAMILY: ClassVar[str] = "bridge"
    CLASS: ClassVar[EventClass] = EventClass.INTERNAL

    alive: bool | None
    session_id: str | None
    last_accessed_ms: int | None


@dataclass(frozen=True, slots=True)
class GatewayErrorMessage(Event):
    """An error frame from the gateway (any object with an ``error`` key, or topic ``error``)."""

    TYPE: ClassVar[str] = "com.ibkr.gateway.error.v1"
    FAMILY: ClassVar[str] = "bridge"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    error: str
    code: int | None
    topic: str | None
    extra: dict[str, Any] = field(default_factory=dict)


class ControlKind(enum.StrEnum):
    WAITING_FOR_SESSION = "waiting_for_session"
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIPTION_ACK = "subscription_ack"
    RESULT = "result"
    MESSAGE = "message"
    DUPLICATE = "duplicate"
    UNCHANGED = "unchanged"
    EMPTY_UPDATE = "empty_update"
    ECHO = "echo"


@dataclass(frozen=True, slots=True)
class Control(Event):
    """Acknowledgements, topic-less messages and frames that changed nothing."""

    TYPE: ClassVar[str] = "com.ibkr.gateway.control.v1"
    FAMILY: ClassVar[str] = "bridge"
    CLASS: ClassVar[EventClass] = EventClass.INTERNAL

    kind: ControlKind
    topic: str | None
    text: str | None = None
    server_id: str | None = None


# --------------------------------------------------------------------------- bridge


class LifecycleKind(enum.StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    AUTHENTICATED = "authenticated"
    UNAUTHENTICATED = "unauthenticated"
    COMPETING = "competing"
    RESUBSCRIBED = "resubscribed"
    STALE = "stale"
    GAP_START = "gap_start"
    GAP_END = "gap_end"
    RECONCILED = "reconciled"
    BACKPRESSURE = "backpressure"
    SPOOL_DAMAGED = "spool_damaged"  # detail: segment, offset, bytes, records_lost (null: unknown)


@dataclass(frozen=True, slots=True)
class Lifecycle(Event):
    """What happened to the bridge's hold on the gateway; gaps open and close in pairs."""

    TYPE: ClassVar[str] = "com.ibkr.bridge.lifecycle.v1"
    FAMILY: ClassVar[str] = "bridge"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    kind: LifecycleKind
    at_ms: int
    session_epoch: int = 0  # the gateway session's epoch then; records carry it as ``sessionepoch``
    reason: str | None = None
    gap_id: str | None = None
    gap_started_ms: int | None = None
    detail: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter(Event):
    """A frame or record that could not be handled, with its raw bytes and the reason."""

    TYPE: ClassVar[str] = "com.ibkr.bridge.deadletter.v1"
    FAMILY: ClassVar[str] = "dlq"
    CLASS: ClassVar[EventClass] = EventClass.CRITICAL

    reason: str
    stage: str  # "normalize" or "publish"
    raw: str
    raw_encoding: str  # "utf-8" or "base64"
    received_ns: int | None = None
    topic: str | None = None
    destination: str | None = None
    error: str | None = None
    attempts: int | None = None
    raw_bytes: int | None = None  # the frame's full size; ``raw`` holds at most 64 KiB of it
    raw_truncated: bool = False


EVENT_TYPES: tuple[type[Event], ...] = (
    Quote,
    BookLadder,
    Bars,
    Order,
    Execution,
    Pnl,
    AccountSummary,
    AccountLedger,
    AccountProperties,
    Notification,
    Bulletin,
    AuthStatus,
    SystemLogin,
    Heartbeat,
    TickleReply,
    GatewayErrorMessage,
    Control,
    Lifecycle,
    DeadLetter,
)

EVENT_TYPE_BY_NAME: dict[str, type[Event]] = {cls.TYPE: cls for cls in EVENT_TYPES}
