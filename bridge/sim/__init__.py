"""A faithful Client Portal Gateway simulator: REST + websocket on one port, self-signed TLS,
heartbeats, every topic, orders with fills, fault injection. See ``bridge.sim.server`` for the
Python API and ``bridge.sim.faults`` for the faults; ``ibkr-bridge sim`` runs it.

The names below are imported on first use: the CLI builds its parser without loading the
simulator's server (aiohttp, its certificate).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.sim.config import SimConfig
    from bridge.sim.orders import SimRecord
    from bridge.sim.server import GatewaySimulator

__all__ = ["GatewaySimulator", "SimConfig", "SimRecord"]

_HOMES = {
    "GatewaySimulator": "bridge.sim.server",
    "SimConfig": "bridge.sim.config",
    "SimRecord": "bridge.sim.orders",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
