"""Shared fixtures: real processes (Redis, the Kafka-protocol broker, the gateway simulator).

A test whose real component cannot be started fails; it never skips (``.ci/run`` installs them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.delivery.spool import Spool

pytest_plugins = ["tests.fixtures.processes", "tests.fixtures.sim", "tests.fixtures.brokers"]


@pytest.fixture(autouse=True)
def _close_every_spool() -> Iterator[None]:
    """Tests leave their spools open; warnings are errors, so each is closed when its test ends
    (patched on a MonkeyPatch of its own: a test's ``monkeypatch.undo()`` leaves it in place)."""
    opened: list[Spool] = []
    init = Spool.__init__

    def tracking_init(self: Spool, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Spool, "__init__", tracking_init)
        yield
    for spool in opened:
        spool.close()
