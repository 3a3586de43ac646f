"""A broker that refuses idempotent producers: said once, clearly, with the way out; never a silent fallback.

The test broker (Tansu) answers InitProducerId with UnknownError. ``run`` with the default settings
must stop (exit 1) with one message naming what was refused, ``sink.kafka.enable_idempotence``,
the ``--no-kafka-idempotence`` flag and the guarantee that gives up; with the flag it publishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bridge.errors import SinkUnavailable
from bridge.sinks.kafka import KafkaSink, KafkaSinkOptions
from bridge.sinks.kafka_idempotence import IdempotenceRefused
from tests.fixtures.processes import free_port, stop_process
from tests.fixtures.sim import SimProcess

SCRIPT = Path(sys.executable).with_name("ibkr-bridge")


def _run_bridge(kafka: str, sim: SimProcess, cwd: Path, *flags: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    argv = [str(SCRIPT), "run", "--gateway", sim.origin, "--gateway-insecure-tls", "--sink", f"kafka://{kafka}",
            "--market-data", "265598", "--admin", f"127.0.0.1:{free_port()}", *flags]  # fmt: skip
    return subprocess.Popen(argv, cwd=cwd, env={**env, "BRIDGE_LOGGING__FORMAT": "text"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


async def test_the_sink_says_the_broker_refused_idempotence_and_is_not_retried(kafka_broker: str) -> None:
    sink = KafkaSink(KafkaSinkOptions(bootstrap_servers=kafka_broker))
    with pytest.raises(IdempotenceRefused) as caught:
        await sink.start()
    await sink.close()
    assert caught.value.retryable is False
    message = str(caught.value)
    assert "refused an idempotent producer" in message and "UnknownError" in message
    assert "sink.kafka.enable_idempotence: false" in message and "--no-kafka-idempotence" in message
    assert "duplicates" in message


async def test_an_unreachable_broker_is_an_outage_not_a_refusal() -> None:
    sink = KafkaSink(KafkaSinkOptions(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=2000))
    with pytest.raises(SinkUnavailable):
        await sink.start()
    await sink.close()


def test_run_stops_once_with_the_refusal_and_the_way_out(kafka_broker: str, sim_process: SimProcess,
                                                          tmp_path: Path) -> None:  # fmt: skip
    proc = _run_bridge(kafka_broker, sim_process, tmp_path)
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        stop_process(proc)
    assert proc.returncode == 1, stderr
    assert stderr.count("refused an idempotent producer") == 1, stderr
    assert "Unexpected error during InitProducerIdRequest" not in stderr
    assert "Traceback" not in stderr
    assert "--no-kafka-idempotence" in stderr and "sink.kafka.enable_idempotence: false" in stderr


def test_run_with_the_flag_publishes_and_status_shows_the_sink_up(kafka_broker: str, sim_process: SimProcess,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    admin = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    argv = [str(SCRIPT), "run", "--gateway", sim_process.origin, "--gateway-insecure-tls",
            "--sink", f"kafka://{kafka_broker}", "--market-data", "265598", "--admin", f"127.0.0.1:{admin}",
            "--no-kafka-idempotence"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        status: dict[str, object] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as response:
                    status = json.loads(response.read())["sink"]
            except OSError:
                status = {}
            if status.get("published_events"):
                break
            time.sleep(0.2)
        assert status.get("up") is True and status.get("published_events"), status
        assert status.get("last_error") is None
    finally:
        stop_process(proc)


def test_status_shows_the_last_sink_error_while_the_broker_is_unreachable(sim_process: SimProcess,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    admin = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    argv = [str(SCRIPT), "run", "--gateway", sim_process.origin, "--gateway-insecure-tls",
            "--sink", f"kafka://127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{admin}"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sink: dict[str, object] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and not sink.get("last_error"):
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as response:
                    sink = json.loads(response.read())["sink"]
            except OSError:
                sink = {}
        assert sink.get("up") is False and "kafka unavailable" in str(sink.get("last_error")), sink
    finally:
        stop_process(proc)
