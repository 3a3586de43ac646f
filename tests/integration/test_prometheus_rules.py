"""The shipped alert rules, their unit tests, the Prometheus config and the metric exposition,
checked with Prometheus' own ``promtool`` (Debian package ``prometheus``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.metrics import BridgeMetrics
from tests.fixtures.processes import require_binary
from tests.unit.test_dashboards import alert_expressions, dashboard_expressions, load_dashboard

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy/prometheus"
RULES = PROMETHEUS / "rules/ibkr-bridge.rules.yml"
RULE_TESTS = PROMETHEUS / "tests/ibkr-bridge.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool", "checks and unit-tests the Prometheus rules")


def run(promtool: str, *args: str | Path, stdin: bytes | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [promtool, *map(str, args)], input=stdin, capture_output=True, cwd=cwd, timeout=60, check=False
    )


def alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_rule_file_passes_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout.decode()


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        instances = {s["series"].split('instance="')[1].split('"')[0] for s in case["input_series"]}
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            firing = {alert["exp_labels"]["instance"] for alert in expected}
            (fires if firing else quiet).add(check["alertname"])
            if instances - firing:
                quiet.add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def test_rule_unit_tests_fail_when_the_alerts_never_fire(promtool: str, tmp_path: Path) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(0) > 1"
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(rules))
    shutil.copy(RULE_TESTS, tmp_path / "tests")

    result = run(promtool, "test", "rules", Path("tests") / RULE_TESTS.name, cwd=tmp_path)

    assert result.returncode != 0
    output = result.stdout.decode() + result.stderr.decode()
    assert {rule["alert"] for rule in alerts() if f"alertname: {rule['alert']}," not in output} == set()


def test_every_dashboard_and_alert_expression_parses_in_prometheus(promtool: str, tmp_path: Path) -> None:
    expressions = {**dashboard_expressions(load_dashboard()), **alert_expressions()}
    records = [{"record": f"check:expression_{i}", "expr": e} for i, e in enumerate(expressions.values())]
    path = tmp_path / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": records}]}))

    result = run(promtool, "check", "rules", path)

    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert f"SUCCESS: {len(records)} rules found" in result.stdout.decode()


def test_promtool_rejects_an_expression_that_does_not_parse(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    records = [{"record": "check:broken", "expr": "sum by (le (rate(x_total[5m]))"}]
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": records}]}))
    assert run(promtool, "check", "rules", path).returncode != 0


def test_prometheus_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "1 rule files found" in output


def test_metric_exposition_passes_promtool_lint(promtool: str) -> None:
    metrics = BridgeMetrics()
    metrics.frames_received("smd", 3, 900)
    metrics.publish_failed("kafka", "unavailable")
    metrics.observe_event_lags("market_data", [0.1])
    metrics.set_subscriptions("smd", "active", 2)

    result = run(promtool, "check", "metrics", stdin=metrics.render())

    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
