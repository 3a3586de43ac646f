"""Shared fixtures: real processes (Redis, the Kafka-protocol broker, the gateway simulator).

A test whose real component cannot be started fails; it never skips (``.ci/run`` installs them).
No test depends on the machine's speed: property tests run without hypothesis's per-example
deadline and without its "too slow" health check (a loaded machine is not a failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from bridge.delivery.spool import Spool

settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

pytest_plugins = ["tests.fixtures.processes", "tests.fixtures.sim", "tests.fixtures.brokers"]


def _closing_every(cls: type[Any]) -> Iterator[None]:
    """Track every instance of ``cls`` made during a test and close it when the test ends (on a
    MonkeyPatch of its own: a test's ``monkeypatch.undo()`` leaves the tracking in place)."""
    opened: list[Any] = []
    init = cls.__init__

    def tracking_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        opened.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "__init__", tracking_init)
        yield
    for instance in opened:
        instance.close()


@pytest.fixture(autouse=True)
def _close_every_spool() -> Iterator[None]:
    """Tests leave their spools and simulator sockets open; warnings are errors, so each is
    closed when its test ends."""
    yield from _closing_every(Spool)


@pytest.fixture(autouse=True)
def _close_every_sim_socket() -> Iterator[None]:
    from tests.fixtures.sim import SimSocket  # imported after the plugins, which pytest rewrites

    yield from _closing_every(SimSocket)
