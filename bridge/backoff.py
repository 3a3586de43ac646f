"""Reconnect delay policy (pure): full-jitter exponential backoff with a floor and a cap.

The n-th consecutive failure waits a uniformly random time between ``floor_s``
and ``min(cap_s, floor_s * multiplier**n)``. The failure count is reset only
after ``healthy_reset_s`` of continuously healthy data, so a peer that accepts
a connection and drops it at once keeps meeting longer delays instead of being
hammered at the floor. Randomness comes from an injected :class:`random.Random`
and time comes in as ``now_ns``; tests use :meth:`BackoffPolicy.no_delay`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait before the next attempt; durations in seconds."""

    floor_s: float = 0.5
    cap_s: float = 30.0
    multiplier: float = 2.0
    healthy_reset_s: float = 30.0

    def __post_init__(self) -> None:
        if self.floor_s < 0 or self.cap_s < self.floor_s:
            raise ValueError(f"backoff needs 0 <= floor_s <= cap_s, got {self.floor_s}, {self.cap_s}")
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier}")
        if self.healthy_reset_s < 0:
            raise ValueError(f"healthy_reset_s must be >= 0, got {self.healthy_reset_s}")

    @classmethod
    def no_delay(cls) -> BackoffPolicy:
        """A policy whose every delay is zero (for tests)."""
        return cls(floor_s=0.0, cap_s=0.0, healthy_reset_s=0.0)

    def ceiling_s(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failures (before jitter)."""
        if failures <= 0 or self.floor_s == 0:
            return self.floor_s
        # Exponent bounded so the float never overflows; the cap applies long before.
        growth = self.multiplier ** min(failures, 64)
        return min(self.cap_s, self.floor_s * growth)

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """A full-jitter delay in ``[floor_s, ceiling_s(failures)]``."""
        low, high = self.floor_s, self.ceiling_s(failures)
        if high <= low:
            return low
        return rng.uniform(low, high)


# The bridge's retry policies, one place: the gateway socket's comes from the session settings.
PUBLISH_RETRY = BackoffPolicy(floor_s=0.05, cap_s=5.0, multiplier=2.0, healthy_reset_s=0.0)  # a sink batch
SINK_START_RETRY = BackoffPolicy(floor_s=0.2, cap_s=10.0)  # connecting a sink that was down at start


class Backoff:
    """Failure counter plus the healthy-period reset rule, driven by the caller's clock."""

    __slots__ = ("_failures", "_healthy_since_ns", "policy", "rng")

    def __init__(self, policy: BackoffPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        self._failures = 0
        self._healthy_since_ns: int | None = None

    @property
    def failures(self) -> int:
        """Consecutive failures since the last reset."""
        return self._failures

    def next_delay_s(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        delay = self.policy.delay_s(self._failures, self.rng)
        self._failures += 1
        self._healthy_since_ns = None
        return delay

    def delay_for(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures, for a caller that counts them itself."""
        return self.policy.delay_s(failures, self.rng)

    def healthy(self, now_ns: int) -> None:
        """Note healthy data at ``now_ns``; reset once it has been healthy for long enough."""
        if self._healthy_since_ns is None:
            self._healthy_since_ns = now_ns
        if now_ns - self._healthy_since_ns >= self.policy.healthy_reset_s * _NS_PER_S:
            self._failures = 0

    def unhealthy(self) -> None:
        """The healthy period ended (data stopped or the connection dropped) without a reset."""
        self._healthy_since_ns = None
