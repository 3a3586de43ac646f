"""A faithful Client Portal Gateway simulator: REST + websocket on one port, self-signed TLS,
heartbeats, every topic, orders with fills, fault injection. See ``bridge.sim.server`` for the
Python API and ``bridge.sim.faults`` for the faults; ``ibkr-bridge sim`` runs it."""

from bridge.sim.config import SimConfig
from bridge.sim.orders import SimRecord
from bridge.sim.server import GatewaySimulator

__all__ = ["GatewaySimulator", "SimConfig", "SimRecord"]
