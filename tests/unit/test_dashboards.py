"""The Grafana dashboard and alert rules only use metrics the bridge exports, and their PromQL parses.

PromQL is parsed by ``promql-parser`` (a binding of the Rust PromQL parser, which follows
Prometheus' grammar), giving an AST from which selector names are read instead of guessed
with regular expressions. ``tests/integration/test_prometheus_rules.py`` parses the same
expressions with Prometheus' own parser (``promtool check rules``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from bridge.metrics import BridgeMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/ibkr-bridge.json"
CHART_DASHBOARD = ROOT / "helm/ibkr-bridge/dashboards/ibkr-bridge.json"
RULES = ROOT / "deploy/prometheus/rules/ibkr-bridge.rules.yml"
CHART_RULES = ROOT / "helm/ibkr-bridge/rules/ibkr-bridge.rules.yml"

ROWS = [
    "Session",
    "WebSocket",
    "Subscriptions",
    "Throughput & latency",
    "Backpressure & spool",
    "Errors & dead letters",
    "Process",
]

# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_DURATIONS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}
GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$")


def grafana_to_promql(expr: str) -> str:
    """The query Prometheus receives: interval macros become durations, ``$var`` becomes ``.*``."""
    for macro, duration in GRAFANA_DURATIONS.items():
        expr = expr.replace(macro, duration)
    return GRAFANA_VARIABLE.sub(".*", expr)


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """``where -> PromQL`` for every panel target and every query variable."""
    found: dict[str, str] = {}
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} target {target['refId']}"] = grafana_to_promql(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.match(variable["query"]["query"])
        assert match, f"variable {variable['name']} is not a label_values() query"
        found[f"variable {variable['name']}"] = grafana_to_promql(match["selector"])
    return found


def alert_expressions(path: Path = RULES) -> dict[str, str]:
    rules = yaml.safe_load(path.read_text())
    return {
        f"alert {rule['alert']}": rule["expr"] for group in rules["groups"] for rule in group["rules"]
    }


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def undefined_metrics(expressions: dict[str, str], exported: frozenset[str]) -> dict[str, set[str]]:
    missing = {where: metric_names(expr) - exported for where, expr in expressions.items()}
    return {where: names for where, names in missing.items() if names}


@pytest.fixture(scope="module")
def exported() -> frozenset[str]:
    return BridgeMetrics().exported_names()


def test_dashboard_has_the_seven_rows_in_order() -> None:
    dashboard = load_dashboard()
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ROWS


def test_every_row_holds_panels_and_every_panel_queries_prometheus() -> None:
    dashboard = load_dashboard()
    per_row: dict[str, int] = {}
    current = None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            per_row[current] = 0
            continue
        assert current is not None, f"panel {panel['title']!r} sits above the first row"
        per_row[current] += 1
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert all(count > 0 for count in per_row.values()), per_row


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_dashboard_expression_parses() -> None:
    for where, expr in dashboard_expressions(load_dashboard()).items():
        try:
            promql_parser.parse(expr)
        except ValueError as exc:
            pytest.fail(f"{where}: {expr!r} does not parse: {exc}")


def test_every_metric_a_dashboard_panel_uses_is_exported(exported: frozenset[str]) -> None:
    expressions = dashboard_expressions(load_dashboard())
    used = set().union(*(metric_names(expr) for expr in expressions.values()))
    assert len(used) > 30  # the extraction really walks the panels
    assert undefined_metrics(expressions, exported) == {}


def test_every_metric_an_alert_uses_is_exported(exported: frozenset[str]) -> None:
    expressions = alert_expressions()
    assert len(expressions) >= 8
    assert undefined_metrics(expressions, exported) == {}


def test_an_expression_naming_an_unknown_metric_is_reported(exported: frozenset[str]) -> None:
    expressions = {"probe": 'rate(ibkr_bridge_frames_received_total[5m]) / ibkr_bridge_no_such_metric{a="b"}'}
    assert undefined_metrics(expressions, exported) == {"probe": {"ibkr_bridge_no_such_metric"}}


def test_grafana_macros_and_variables_become_valid_promql() -> None:
    query = 'rate(x_total{job=~"$job", instance=~"${instance}"}[$__rate_interval])'
    assert grafana_to_promql(query) == 'rate(x_total{job=~".*", instance=~".*"}[1m])'
    with pytest.raises(ValueError):
        promql_parser.parse("rate(x_total[$__rate_interval])")


def test_the_chart_packages_the_same_dashboard_and_rules() -> None:
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes()
    assert CHART_RULES.read_bytes() == RULES.read_bytes()
