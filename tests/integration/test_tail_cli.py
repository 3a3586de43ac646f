"""``ibkr-bridge tail`` as a user runs it: clean exits, broker failures naming host:port, and
orders to see from a standalone simulator asked for order flow (``sim --order-flow``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.processes import free_port, stop_process
from tests.fixtures.sim import start_sim_process

SCRIPT = Path(sys.executable).with_name("ibkr-bridge")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}


def _tail(*argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "tail", *argv], env=_env(), capture_output=True, text=True,
                          timeout=timeout_s, check=False)  # fmt: skip


def test_an_unreachable_kafka_is_named_and_the_consumer_is_closed() -> None:
    port = free_port()
    result = _tail("--sink", f"kafka://127.0.0.1:{port}")
    assert result.returncode == 1, result.stderr
    assert f"kafka unavailable at 127.0.0.1:{port}" in result.stderr
    assert "Unclosed" not in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_redis_is_named_by_host_and_port() -> None:
    port = free_port()
    result = _tail("--sink", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert result.returncode == 1, result.stderr
    assert f"redis unavailable at 127.0.0.1:{port}" in result.stderr and "hunter2" not in result.stderr


def test_orders_from_a_standalone_simulator_with_order_flow_reach_tail(kafka_broker: str, tmp_path: Path) -> None:
    sim = start_sim_process("--order-flow", "0.5")
    admin = free_port()
    bridge = subprocess.Popen(
        [str(SCRIPT), "run", "--gateway", sim.origin, "--gateway-insecure-tls", "--sink", f"kafka://{kafka_broker}",
         "--orders", "--executions", "--no-kafka-idempotence", "--admin", f"127.0.0.1:{admin}"],
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        result = _tail("--sink", f"kafka://{kafka_broker}", "--type", "orders", "--count", "2", "--from-beginning",
                       "--destination", "ibkr.orders.v1")  # fmt: skip
    finally:
        stop_process(bridge)
        sim.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("ibkr.orders.v1" in line and " order " in line for line in lines), lines
    assert "Task was destroyed" not in result.stderr and "Unclosed" not in result.stderr, result.stderr
    assert "waiting for" in result.stderr  # says what it waits for instead of sitting silent
