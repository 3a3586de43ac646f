"""Pure modules import no asyncio, no client library and no metrics; adapters never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2] / "bridge"
PURE = ["events", "dead_letters", "codec", "routing", "pipeline", "backoff", "config", "errors", "schemagen", "replay",
        "oauth1a", "gateway/tls", "ingest/wire", "ingest/fields", "ingest/bounds", "ingest/session", "ingest/session_types",
        "ingest/subscriptions", "ingest/normalize/normalizer", "ingest/normalize/trading",
        "ingest/normalize/account", "ingest/normalize/history", "ingest/normalize/control",
        "sinks/base"]  # fmt: skip
FORBIDDEN = {"asyncio", "aiohttp", "aiokafka", "redis", "websockets", "picows", "prometheus_client", "socket",
             "bridge.metrics", "bridge.sinks.kafka", "bridge.sinks.redis", "bridge.app", "time"}  # fmt: skip
ADAPTERS = ["sinks/kafka", "sinks/redis", "sinks/memory", "sinks/stdout", "gateway/connection", "gateway/rest"]


def _runtime_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


EXISTING_PURE = [name for name in PURE if (ROOT / f"{name}.py").exists()]


def test_the_core_pure_modules_exist() -> None:
    assert set(CORE) <= set(EXISTING_PURE)


@pytest.mark.parametrize("name", EXISTING_PURE)
def test_pure_module_imports_no_io_client_or_metrics(name: str) -> None:
    path = ROOT / f"{name}.py"
    bad = sorted(m for m in imported_modules(path) if violates(m, FORBIDDEN))
    assert not bad, f"bridge/{name}.py imports {bad}"


DELIVERY = ["delivery/buffer", "delivery/spool", "delivery/spool_format", "delivery/observer", "publisher"]
CLIENTS = {"aiokafka", "redis", "websockets", "picows", "prometheus_client", "bridge.metrics", "bridge.sinks.kafka",
           "bridge.sinks.redis"}  # fmt: skip


@pytest.mark.parametrize("name", DELIVERY)
def test_delivery_core_uses_no_broker_client_and_no_metrics_library(name: str) -> None:
    bad = sorted(m for m in imported_modules(ROOT / f"{name}.py") if violates(m, CLIENTS))
    assert not bad, f"bridge/{name}.py imports {bad}"


@pytest.mark.parametrize("name", [a for a in ADAPTERS if (ROOT / f"{a}.py").exists()])
def test_adapters_never_import_each_other(name: str) -> None:
    path = ROOT / f"{name}.py"
    others = {"bridge." + a.replace("/", ".") for a in ADAPTERS if a != name}
    bad = sorted(m for m in imported_modules(path) if violates(m, others))
    assert not bad, f"bridge/{name}.py imports {bad}"


def test_only_the_composition_root_names_concrete_sinks() -> None:
    concrete = {"bridge.sinks.kafka", "bridge.sinks.redis"}
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if p.name not in ("app.py", "cli.py") and not p.match("sinks/*")
                 and any(violates(m, concrete) for m in imported_modules(p))]  # fmt: skip
    assert not offenders, f"{offenders} name concrete sinks; only app.py may"


CORE = {"events", "codec", "routing", "pipeline", "errors", "schemagen", "replay", "ingest/wire", "ingest/fields",
        "ingest/session", "ingest/normalize/normalizer", "ingest/normalize/trading", "ingest/normalize/account",
        "ingest/normalize/history", "ingest/normalize/control", "sinks/base"}  # fmt: skip
