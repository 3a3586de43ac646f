"""No test may depend on the machine's speed: every hypothesis setting disables the deadline."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import HealthCheck, settings

TESTS = Path(__file__).resolve().parents[1]


def _settings_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) == "settings" or getattr(node.func, "attr", None) == "settings")
    ]  # fmt: skip


def test_the_suite_profile_has_no_deadline_and_tolerates_a_slow_machine() -> None:
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check


def test_every_explicit_hypothesis_settings_turns_the_deadline_off() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        source = path.read_text()
        if "hypothesis" not in source:
            continue
        for call in _settings_calls(ast.parse(source)):
            keywords = {k.arg: k.value for k in call.keywords}
            if not call.keywords and not call.args:
                continue
            deadline = keywords.get("deadline")
            if not (isinstance(deadline, ast.Constant) and deadline.value is None):
                offenders.append(f"{path.relative_to(TESTS)}:{call.lineno}")
    assert offenders == [], f"hypothesis settings without deadline=None: {offenders}"
