"""The gateway session's vocabulary (pure): its settings and states, the gaps it
opens and closes, the lifecycle events it reports, and the actions the sans-I/O
:class:`~bridge.ingest.session.GatewaySession` asks its I/O layer to perform
(reconnect, REST calls, reconcile).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, TypeAlias

from annotated_types import Ge, Gt, Le

from bridge.backoff import BackoffPolicy
from bridge.events import Lifecycle, LifecycleKind, Scalar

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
SMH_MAX_CONCURRENT = 5  # the gateway's limit on concurrent historical requests (reference §2.2)

Positive = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]


def _default_cadences() -> dict[str, float]:
    return {"md": 120.0, "ld": 30.0}


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Every knob of the gateway session; durations carry their unit.

    The one definition of the ``session`` settings section: ``bridge.config`` validates YAML and
    environment values straight into this class (the ``Annotated`` bounds are its constraints)."""

    tic_interval_s: Positive = 30.0
    tickle_interval_s: Positive = 60.0
    stale_after_s: Positive = 25.0
    smd_refresh_s: Positive = 540.0
    reconnect_floor_s: NonNegative = 0.5
    reconnect_cap_s: Positive = 30.0
    reconnect_multiplier: Annotated[float, Ge(1)] = 2.0
    healthy_reset_s: NonNegative = 30.0
    auth_poll_s: Positive = 5.0
    auth_timeout_s: Positive = 20.0
    # POST /iserver/reauthenticate while unauthenticated; None: on over OAuth (only ssodh/init
    # reopens that session), off with the gateway
    reauthenticate: bool | None = None
    reauthenticate_interval_s: Positive = 60.0
    ssodh_init: bool = True
    send_session_message: bool = False  # else only on "waiting for session" (cookie first)
    reconcile_on_start: bool = True
    smh_max_concurrent: Annotated[int, Ge(1), Le(SMH_MAX_CONCURRENT)] = SMH_MAX_CONCURRENT
    smh_timeout_s: Positive = 30.0
    # Subscription channel ('md', 'or', 'tr', 'pl', 'sd', 'ld', 'bd') -> the longest silence
    # expected of it. Beyond it the subscription is stale: re-subscribed, counted in
    # ibkr_bridge_stale_subscriptions and a gap opened until its data comes again. Channels left
    # out (orders and executions: event-driven) are never judged.
    expected_cadence_s: Mapping[str, Positive] = field(default_factory=_default_cadences)

    def backoff_policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            floor_s=self.reconnect_floor_s,
            cap_s=self.reconnect_cap_s,
            multiplier=self.reconnect_multiplier,
            healthy_reset_s=self.healthy_reset_s,
        )


class SessionState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"  # socket open, not yet usable
    AUTHENTICATED = "authenticated"  # usable: subscriptions are live
    UNAUTHENTICATED = "unauthenticated"  # socket open, auth lost or competing


# ------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close the socket (the I/O layer then reports ``connection_lost``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class TickleRest:
    """``POST /tickle`` (REST keepalive)."""


@dataclass(frozen=True, slots=True)
class PollAuthStatus:
    """``GET /iserver/auth/status`` and report it through ``auth_status_polled``."""


@dataclass(frozen=True, slots=True)
class Reauthenticate:
    """``POST /iserver/reauthenticate`` (only when configured)."""


@dataclass(frozen=True, slots=True)
class Reconcile:
    """Fetch orders and trades over REST and publish what changed while blind."""

    gap_id: str | None
    gap_started_ms: int | None


Action: TypeAlias = Reconnect | TickleRest | PollAuthStatus | Reauthenticate | Reconcile


# ------------------------------------------------------------------------------------------- gaps


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch during which data may have been missed (disconnect, auth loss)."""

    gap_id: str
    started_ns: int
    reason: str


class GapTracker:
    """At most one open gap at a time; ids are ``<start ms>-<count>``."""

    def __init__(self) -> None:
        self.current: Gap | None = None
        self._count = 0

    def open(self, reason: str, now_ns: int) -> Gap | None:
        """Open a gap; None when one is already open (the first cause is kept)."""
        if self.current is not None:
            return None
        self._count += 1
        self.current = Gap(f"{now_ns // NS_PER_MS}-{self._count}", now_ns, reason)
        return self.current

    def close(self) -> Gap | None:
        """Close the open gap and return it (None when none was open)."""
        gap, self.current = self.current, None
        return gap


def lifecycle_event(
    kind: LifecycleKind,
    now_ns: int,
    session_epoch: int,
    reason: str | None = None,
    gap: Gap | None = None,
    detail: Mapping[str, Scalar] | None = None,
) -> Lifecycle:
    return Lifecycle(
        kind=kind,
        at_ms=now_ns // NS_PER_MS,
        session_epoch=session_epoch,
        reason=reason,
        gap_id=gap.gap_id if gap else None,
        gap_started_ms=gap.started_ns // NS_PER_MS if gap else None,
        detail=dict(detail or {}),
    )
