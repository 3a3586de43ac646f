"""One error tree for the bridge.

Every class says whether the operation that raised it may be retried
(``retryable``); retry loops read that flag instead of matching types.

    BridgeError
    ├── ConfigError            bad configuration (never retryable)
    ├── SubscriptionRefused    a subscription the gateway cannot hold (a sixth concurrent smh)
    ├── GatewayError
    │   ├── GatewayUnavailable socket/REST unreachable, refused, dropped (retryable)
    │   └── GatewayRejected    the gateway answered with a permanent error
    └── SinkError
        ├── SinkUnavailable    broker down, timeout, connection lost (retryable)
        └── SinkRejected       record refused for good: too large, unknown topic, ACL
"""

from __future__ import annotations

from typing import ClassVar


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""

    retryable: ClassVar[bool] = False


class ConfigError(BridgeError):
    """Configuration is invalid; the message names the field, the value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class SubscriptionRefused(BridgeError, ValueError):
    """A subscription refused before it reaches the gateway; the message says why and what to do."""


class GatewayError(BridgeError):
    """Something went wrong talking to the Client Portal Gateway."""


class GatewayUnavailable(GatewayError):
    retryable = True


class GatewayRejected(GatewayError):
    retryable = False


class SinkError(BridgeError):
    """A sink could not take a batch."""


class SinkUnavailable(SinkError):
    retryable = True


class SinkRejected(SinkError):
    """The sink refused a record for good; it goes to the dead-letter destination."""

    retryable = False

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
