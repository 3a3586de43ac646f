"""The shipped alert rules and dashboard against a live Prometheus scraping a real bridge.

A real ``prometheus`` scrapes a real ``ibkr-bridge run`` (simulator gateway, real Redis sink)
every second, with the shipped rule file loaded as it is and once more rendered with every
duration shortened 60 times (a minute of the rules is a second here: ``[5m]`` -> ``[5s]``,
``for: 2m`` -> ``for: 2s``). The simulator's fault injection and the broker then drive the
bridge through the condition each alert is about, one after the other. For every alert the
(shortened) expression returns no series while healthy, returns series during its condition
(the rule engine fires it) and none again once the condition is over. After the run every
selector of every dashboard panel and every rule returns series, every rule evaluates without
error, and the label sets the promtool unit tests use are the ones the bridge exports.

Run alone (about two minutes) with ``pytest tests/integration/test_alerts_live.py -s``; ``-s``
prints the table of alerts, conditions and values seen.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import redis
import yaml

from tests.fault.harness import BridgeProcess
from tests.fixtures.brokers import ServerProcess, start_redis_server
from tests.fixtures.prometheus import JOB, PrometheusServer, start_prometheus
from tests.fixtures.sim import SimProcess, start_sim_process
from tests.unit.test_dashboards import RULES, dashboard_expressions, load_dashboard

RULE_TESTS = RULES.parent.parent / "tests/ibkr-bridge.test.yml"
SCALE = 60  # rule durations are divided by this
CONIDS = ("265598", "8314")
PNL = "ibkr.pnl.v1"
DLQ = "ibkr.dlq.v1"
SCALED = {"rendering": "shortened"}  # label added to the shortened rules, to tell their alerts apart
DURATION = re.compile(r"(\d+)([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def shortened(duration: str) -> str:
    """A Prometheus duration divided by SCALE: ``5m`` -> ``5s``, ``1h`` -> ``60s``."""
    seconds = sum(int(n) * SECONDS[unit] for n, unit in DURATION.findall(duration))
    assert seconds, duration
    return f"{max(1, seconds // SCALE)}s"


def shortened_rules(rules: dict[str, Any]) -> dict[str, Any]:
    groups = []
    for group in rules["groups"]:
        shorter = []
        for rule in group["rules"]:
            rule = dict(rule)
            rule["expr"] = re.sub(r"\[(\w+)\]", lambda m: f"[{shortened(m[1])}]", rule["expr"])
            if "for" in rule:
                rule["for"] = shortened(rule["for"])
            rule["labels"] = {**rule.get("labels", {}), **SCALED}
            shorter.append(rule)
        groups.append({**group, "name": f"{group['name']}-shortened", "rules": shorter})
    return {"groups": groups}


def test_shortening_divides_every_duration_of_an_expression_and_its_hold() -> None:
    rules = {"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": "increase(x_total[1h]) > 5 and deriv(y[15m]) > 0", "for": "10m"},
        {"alert": "B", "expr": "rate(x_total[5m]) > 0"},
    ]}]}  # fmt: skip
    got = shortened_rules(rules)["groups"][0]
    assert got["name"] == "g-shortened"
    assert got["rules"][0]["expr"] == "increase(x_total[60s]) > 5 and deriv(y[15s]) > 0"
    assert got["rules"][0]["for"] == "10s" and "for" not in got["rules"][1]
    assert got["rules"][1]["labels"] == SCALED


# --------------------------------------------------------------------------- the run


@dataclass
class Seen:
    """What one alert did in its condition."""

    alert: str
    condition: str
    healthy: str = "not checked"  # what the expression returned before the condition
    during: str = ""  # the expression's values during the condition
    fired: bool = False  # the rule engine reported it firing
    after: str = "not checked"  # what the expression returned once the condition was over


@dataclass
class LiveRun:
    prometheus: PrometheusServer
    bridge: BridgeProcess
    sim: SimProcess
    redis_server: ServerProcess
    expressions: dict[str, str]  # alert -> shortened expression
    seen: dict[str, Seen] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading Prometheus

    def values(self, expr: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.prometheus.query(expr)]

    def wait_series(self, expr: str, timeout_s: float = 45.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.prometheus.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"no series for {expr!r} within {timeout_s} s\n{self.bridge.log()[-3000:]}")
            time.sleep(0.25)

    def wait_empty(self, expr: str, timeout_s: float = 45.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.prometheus.query(expr):
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} still returns {self.prometheus.query(expr)} after {timeout_s} s")
            time.sleep(0.25)

    def wait_firing(self, alert: str, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for item in self.prometheus.alerts():
                labels = item["labels"]
                ours = labels.get("alertname") == alert and labels.get("rendering") == "shortened"
                if ours and item["state"] == "firing":
                    return True
            time.sleep(0.25)
        return False

    # ------------------------------------------------------------------ conditions

    def condition(self, alert: str, description: str) -> Seen:
        seen = self.seen[alert] = Seen(alert, description)
        return seen

    def fires(self, seen: Seen, timeout_s: float = 45.0) -> None:
        expr = self.expressions[seen.alert]
        result = self.wait_series(expr, timeout_s)
        seen.fired = self.wait_firing(seen.alert)
        seen.during = ", ".join(_describe(sample) for sample in self.prometheus.query(expr) or result)

    def quiet(self, seen: Seen, timeout_s: float = 45.0) -> None:
        self.wait_empty(self.expressions[seen.alert], timeout_s)
        seen.after = "no series"

    def fault(self, name: str, **params: Any) -> None:
        answer = self.sim.apply_fault(name, **params)
        assert answer.get("status", 200) == 200, answer


def _describe(sample: dict[str, Any]) -> str:
    labels = {k: v for k, v in sample["metric"].items() if k not in ("job", "instance")}
    value = float(sample["value"][1])
    shown = f"{value:.3g}"
    return f"{shown} {labels}" if labels else shown


def bridge_settings(sim: SimProcess, redis_url: str, spool_dir: Path) -> dict[str, Any]:
    return {
        "gateway": {"url": sim.origin, "insecure_tls": True},
        "session": {
            "stale_after_s": 5,
            "reconnect_floor_s": 0.2,
            "reconnect_cap_s": 0.5,
            "healthy_reset_s": 1,
            "auth_poll_s": 0.5,
            "expected_cadence_s": {"md": 2},
        },
        "subscriptions": {"market_data": {"conids": list(CONIDS)}, "orders": True, "executions": True, "pnl": True},
        "sink": {"url": redis_url, "redis": {"maxlen_events": 100_000}},
        "delivery": {
            "spool_dir": str(spool_dir),
            "max_market_data_events": 20,
            "max_critical_events": 50,
            "spool_max_bytes": 1 << 20,
            "spool_segment_bytes": 1 << 16,
            "linger_ms": 2,
            "drain_timeout_s": 2,
        },
        "logging": {"level": "INFO", "format": "text"},
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    workdir = tmp_path_factory.mktemp("alerts-live")
    rules = yaml.safe_load(RULES.read_text())
    shortened_path = workdir / "ibkr-bridge.shortened.rules.yml"
    shortened_path.write_text(yaml.safe_dump(shortened_rules(rules)))
    expressions = {rule["alert"]: rule["expr"] for g in shortened_rules(rules)["groups"] for rule in g["rules"]}
    sim = start_sim_process("--no-order-confirmation", "--conids", ",".join(CONIDS))
    try:
        with start_redis_server(workdir) as redis_server:
            bridge = BridgeProcess(bridge_settings(sim, redis_server.address, workdir / "spool"), workdir / "bridge")
            bridge.start()
            try:
                target = f"127.0.0.1:{bridge.admin_port}"
                with start_prometheus(workdir / "prometheus", [target], [RULES, shortened_path]) as prometheus:
                    run = LiveRun(prometheus, bridge, sim, redis_server, expressions)
                    drive(run)
                    yield run
            finally:
                bridge.close()
    finally:
        sim.stop()


def drive(run: LiveRun) -> None:
    """Every condition in turn; each phase leaves the bridge healthy for the next."""
    warm_up(run)
    started = time.monotonic()
    reconnect_storm(run)
    market_data_silence(run)
    auth_loss(run)
    competing_session(run)
    refused_records(run)
    sink_outage(run)
    # The reconnect window ([1h] -> [60s]) has passed by now, or soon.
    run.quiet(run.seen["IbkrBridgeReconnecting"], timeout_s=max(5.0, 75 - (time.monotonic() - started)))
    print_table(run)


def warm_up(run: LiveRun) -> None:
    run.wait_series(f'up{{job="{JOB}"}} == 1')
    run.wait_series("ibkr_bridge_gateway_authenticated == 1")
    for n in range(2):  # orders the reconciliation after each gap finds again
        run.sim.place_order(conid=int(CONIDS[0]), side="BUY" if n else "SELL", quantity=1)
    run.wait_series('increase(ibkr_bridge_frames_received_total{topic="smd"}[5s]) > 0')
    time.sleep(6)  # every window of the shortened rules now holds healthy samples only
    for alert, expr in run.expressions.items():
        result = run.prometheus.query(expr)
        assert result == [], f"{alert} returns {result} while healthy"
        run.seen[alert] = Seen(alert, "", healthy="no series")


def _healthy(run: LiveRun, alert: str, description: str) -> Seen:
    seen = run.seen[alert]
    seen.condition = description
    return seen


def reconnect_storm(run: LiveRun) -> None:
    seen = _healthy(run, "IbkrBridgeReconnecting", "simulator `drop` fault 7 times, each after the bridge reconnected")
    connects = 'sum(ibkr_bridge_gateway_connects_total{reason="reconnect"})'
    for n in range(1, 8):
        run.fault("drop")
        _wait_metric(run, "ibkr_bridge_gateway_connects_total", 'reason="reconnect"', n)
        _wait_metric(run, "ibkr_bridge_gateway_authenticated", "", 1)
    run.wait_series(f"{connects} >= 7")
    run.fires(seen)


def market_data_silence(run: LiveRun) -> None:
    seen = _healthy(run, "IbkrBridgeNoMarketData", "simulator `silence` fault on smd (socket and heartbeats go on)")
    run.fault("silence", topics=["smd"])
    run.fires(seen)
    stale = run.values('ibkr_bridge_stale_subscriptions{topic="md"}')
    gaps = run.values('ibkr_bridge_gaps_total{reason="silent"}')
    run.notes["stale_subscriptions during silence"] = str(stale)
    run.notes["gap_open during silence"] = str(run.values("ibkr_bridge_gap_open"))
    assert stale == [float(len(CONIDS))]
    assert run.values("ibkr_bridge_gap_open") == [1.0] and gaps and gaps[0] >= 1
    run.fault("clear")
    run.quiet(seen)
    run.wait_series('ibkr_bridge_stale_subscriptions{topic="md"} == 0')
    run.wait_series("ibkr_bridge_gap_open == 0")


def auth_loss(run: LiveRun) -> None:
    seen = _healthy(run, "IbkrBridgeGatewayUnauthenticated", "simulator `auth_loss` fault for 8 s")
    run.fault("auth_loss", duration_s=8)
    run.fires(seen)
    run.quiet(seen)


def competing_session(run: LiveRun) -> None:
    seen = _healthy(run, "IbkrBridgeCompetingSession", "simulator `competing` fault for 10 s")
    run.fault("competing", duration_s=10)
    run.fires(seen, timeout_s=8)  # it must show while the competing session lasts
    run.quiet(seen)


def refused_records(run: LiveRun) -> None:
    """Redis refuses entries for good when a stream key holds a string (WRONGTYPE)."""
    client = redis.Redis.from_url(run.redis_server.address)
    dead = _healthy(run, "IbkrBridgeDeadLetters",
                    f"Redis key {PNL} made a string: every PnL record refused; one truncated JSON frame")  # fmt: skip
    errors = _healthy(run, "IbkrBridgePublishErrors", "the same: refused PnL records among acknowledged batches")
    dropped = _healthy(run, "IbkrBridgeCriticalEventsDropped", f"{DLQ} made a string too: dead letters refused")
    try:
        client.delete(PNL)
        client.set(PNL, "not a stream")
        run.fault("malformed", kind="truncated_json")  # a frame dead letter (and a normalize error) too
        run.fires(dead)
        run.fires(errors)
        client.delete(DLQ)
        client.set(DLQ, "not a stream")
        run.fires(dropped)
    finally:
        client.delete(PNL, DLQ)
        client.close()
    for seen in (dead, errors, dropped):
        run.quiet(seen)


def sink_outage(run: LiveRun) -> None:
    """Redis frozen (SIGSTOP) while orders keep coming: buffers fill, the spool grows to its quota."""
    high = _healthy(run, "IbkrBridgeBufferHigh", "Redis frozen (SIGSTOP); market data and orders keep coming")
    growing = _healthy(run, "IbkrBridgeSpoolGrowing", "the same, orders placed every 0.2 s")
    quota = _healthy(run, "IbkrBridgeSpoolNearQuota", "the same, then orders placed as fast as REST takes them")
    flow = _Orders(run.sim, interval_s=0.2)
    run.redis_server.freeze()
    try:
        with flow:
            run.fires(high)
            run.fires(growing)
            flow.interval_s = 0.0
            run.fires(quota, timeout_s=90)
    finally:
        run.redis_server.thaw()
    run.notes["orders placed during the outage"] = str(len(flow.placed))
    for seen in (high, growing, quota):
        run.quiet(seen, timeout_s=60)


class _Orders:
    """Market orders placed through the simulator's REST API from a thread, every ``interval_s``."""

    def __init__(self, sim: SimProcess, interval_s: float) -> None:
        self.sim, self.interval_s = sim, interval_s
        self.placed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orders", daemon=True)

    def __enter__(self) -> _Orders:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            n += 1
            self.placed.append(self.sim.place_order(conid=int(CONIDS[n % 2]), side="BUY" if n % 2 else "SELL"))


def _wait_metric(run: LiveRun, name: str, labels: str, at_least: float, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    pattern = re.compile(rf"^{name}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$", re.M)
    while time.monotonic() < deadline:
        try:
            values = [float(m[2]) for m in pattern.finditer(run.bridge.metrics())]
        except OSError:
            values = []
        if values and max(values) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name}{{{labels}}} did not reach {at_least} within {timeout_s} s")


def print_table(run: LiveRun) -> None:
    print("\n| alert | condition | healthy | during the condition | fired | after |")
    print("|---|---|---|---|---|---|")
    for seen in run.seen.values():
        print(f"| {seen.alert} | {seen.condition} | {seen.healthy} | {seen.during} | {seen.fired} | {seen.after} |")
    for note, value in run.notes.items():
        print(f"{note}: {value}")


# --------------------------------------------------------------------------- what the run shows


def shipped_alerts() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


@pytest.mark.alerts_live
def test_every_alert_is_quiet_when_healthy_fires_in_its_condition_and_clears(live: LiveRun) -> None:
    assert sorted(live.seen) == sorted(shipped_alerts())
    for seen in live.seen.values():
        assert seen.healthy == "no series", seen
        assert seen.during, seen
        assert seen.fired, f"{seen.alert}: its expression returned series but the rule never fired"
        assert seen.after == "no series", seen


@pytest.mark.alerts_live
def test_every_rule_evaluates_without_error_on_real_series(live: LiveRun) -> None:
    rules = live.prometheus.rules()
    assert len(rules) == 2 * len(shipped_alerts())  # the shipped file and its shortened rendering
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []


def selectors(expr: str) -> list[str]:
    """Every vector selector of ``expr``, as PromQL (Grafana variables already replaced by ``.*``)."""
    found: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(str(node))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


@pytest.mark.alerts_live
def test_no_dashboard_panel_or_rule_selects_a_series_that_does_not_exist(live: LiveRun) -> None:
    expressions = {**dashboard_expressions(load_dashboard()),
                   **{f"alert {a}": e for a, e in live.expressions.items()}}  # fmt: skip
    checked = {selector for expr in expressions.values() for selector in selectors(expr)}
    assert len(checked) > 40  # the walk really reaches the panels' selectors
    dead = {where: [s for s in selectors(expr) if not live.prometheus.query(s)] for where, expr in expressions.items()}
    assert {where: names for where, names in dead.items() if names} == {}


@pytest.mark.alerts_live
def test_the_rules_own_selectors_return_series_with_the_label_values_the_bridge_exports(live: LiveRun) -> None:
    assert live.prometheus.query('ibkr_bridge_subscriptions{topic="md", state="desired"}')
    assert live.prometheus.query('ibkr_bridge_frames_received_total{topic="smd"}')


def exposition_label_sets(text: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    found = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series = line.rsplit(" ", 1)[0]
        name, _, labels = series.partition("{")
        pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)
        found.add((name, frozenset(pairs)))
    return found


def promtool_label_sets() -> set[tuple[str, frozenset[tuple[str, str]]]]:
    found = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for item in case["input_series"]:
            node = promql_parser.parse(item["series"])
            assert isinstance(node, promql_parser.VectorSelector)
            pairs = re.findall(r'(\w+)="([^"]*)"', item["series"].partition("{")[2])
            found.add((str(node.name), frozenset((k, v) for k, v in pairs if k not in ("job", "instance"))))
    return found


@pytest.mark.alerts_live
def test_promtool_unit_tests_use_label_sets_a_live_bridge_exports(live: LiveRun) -> None:
    exported = exposition_label_sets(live.bridge.metrics())
    used = promtool_label_sets()
    assert len(used) >= 12
    assert used - exported == set()


def test_a_label_set_the_bridge_does_not_export_is_reported() -> None:
    exported = exposition_label_sets('ibkr_bridge_subscriptions{topic="md",state="desired"} 2.0\n')
    assert (("ibkr_bridge_subscriptions", frozenset({("topic", "smd"), ("state", "active")}))) not in exported
    assert ("ibkr_bridge_subscriptions", frozenset({("topic", "md"), ("state", "desired")})) in exported
