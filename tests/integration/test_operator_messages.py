"""Failures a person can fix get one clear line (and a hint, once), as ``run`` prints them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.cli import build_parser
from tests.fixtures.processes import free_port, stop_process
from tests.fixtures.sim import SimProcess

SCRIPT = Path(sys.executable).with_name("ibkr-bridge")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**env, "BRIDGE_LOGGING__FORMAT": "text"}


def _stderr_after(argv: list[str], cwd: Path, until: str, then_s: float = 4.0) -> str:
    """Run ``argv`` until ``until`` shows on stderr, let it go on for ``then_s``, stop it, return stderr."""
    log = cwd / "stderr.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=sink, text=True)
        try:
            deadline = time.monotonic() + 90
            while until not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(then_s)  # further attempts happen meanwhile; none may repeat the message
        finally:
            stop_process(proc)  # type: ignore[arg-type]
    return log.read_text()


def test_a_self_signed_gateway_without_the_switch_gets_the_hint_once(sim_process: SimProcess, tmp_path: Path) -> None:
    argv = [str(SCRIPT), "run", "--gateway", sim_process.origin, "--sink", "stdout://", "--market-data", "265598",
            "--admin", f"127.0.0.1:{free_port()}"]  # fmt: skip
    stderr = _stderr_after(argv, tmp_path, "not trusted")
    assert stderr.count("--gateway-insecure-tls") == 1, stderr
    assert "gateway.ca_file" in stderr
    assert "object at 0x" not in stderr and "Traceback" not in stderr
    assert stderr.count("not trusted") == 1, stderr


def test_an_unreachable_gateway_is_reported_once_not_per_attempt(tmp_path: Path) -> None:
    argv = [str(SCRIPT), "run", "--gateway", f"https://127.0.0.1:{free_port()}", "--sink", "stdout://",
            "--admin", f"127.0.0.1:{free_port()}"]  # fmt: skip
    stderr = _stderr_after(argv, tmp_path, "gateway unreachable")
    assert stderr.count("gateway unreachable") == 1, stderr
    assert "Connection refused" in stderr
    assert "object at 0x" not in stderr and "gateway disconnected" not in stderr


def test_an_admin_port_in_use_is_one_line_naming_admin_port(sim_process: SimProcess, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(SCRIPT), "run", "--gateway", sim_process.origin, "--gateway-insecure-tls",
                                 "--sink", "stdout://", "--admin", f"127.0.0.1:{port}"], cwd=tmp_path, env=_env(),
                                capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "admin.port" in line]
    assert f"admin.port: 127.0.0.1:{port} is in use by another process; choose another admin.port" in line


def test_schemas_out_on_an_existing_file_is_a_usage_error(tmp_path: Path) -> None:
    existing = tmp_path / "schemas.json"
    existing.write_text("{}")
    result = subprocess.run([str(SCRIPT), "schemas", "--out", str(existing)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is an existing file; give a directory" in result.stderr
    assert existing.read_text() == "{}"


def test_every_command_has_a_description_and_the_top_level_text_is_plain() -> None:
    parser = build_parser()
    assert parser.description and "``" not in parser.description
    commands = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))  # type: ignore[union-attr]
    for name, sub in commands.choices.items():
        assert sub.description, f"`ibkr-bridge {name} --help` has no description"


@pytest.mark.parametrize("command", ["sim", "tail", "check-config", "schemas", "spool"])
def test_help_of_each_command_runs(command: str) -> None:
    result = subprocess.run([str(SCRIPT), command, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.count("\n") > 3
