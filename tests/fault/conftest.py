"""Fixtures of the fault tests: the bridge as a subprocess, and a consumer of everything it writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fault.harness import BridgeProcess, TopicReader

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a fault run on real processes: marked ``fault``, its own step of ``.ci/run``."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.fault)


@pytest.fixture
def bridge_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], BridgeProcess]]:
    """``bridge_process(config)``: a :class:`BridgeProcess` stopped (SIGTERM) after the test."""
    made: list[BridgeProcess] = []

    def make(config: dict[str, Any]) -> BridgeProcess:
        made.append(BridgeProcess(config, tmp_path / f"bridge-{len(made)}"))
        return made[-1]

    yield make
    for bridge in made:
        bridge.close()


@pytest.fixture
def topic_reader() -> Iterator[Callable[[str], TopicReader]]:
    """``topic_reader(bootstrap)``: a started :class:`TopicReader`, closed after the test."""
    readers: list[TopicReader] = []

    def make(bootstrap: str) -> TopicReader:
        reader = TopicReader(bootstrap)
        readers.append(reader)
        reader.start()
        return reader

    yield make
    for reader in readers:
        reader.close()
