"""The layout's rules, read from the source with ``ast``.

Pure modules import no asyncio, no client library and no metrics; adapters never import each
other; only the composition root names concrete sinks; no import cycle anywhere in ``bridge/``
(``TYPE_CHECKING`` and function-level imports included); no module over 400 non-blank lines,
no class over 300; no code writes another object's private attribute.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2] / "bridge"

# Every pure module, by name: a module renamed or removed fails test_every_listed_module_exists
# instead of silently dropping out of the checks. Every module under a PURE_PACKAGES folder must
# be listed here too.
PURE = ["events", "dead_letters", "quote_fast", "codec", "routing", "pipeline", "backoff", "config", "errors",
        "schemagen", "replay", "specs", "oauth1a", "state", "asyncapi", "gateway/tls", "sinks/base",
        "ingest/__init__", "ingest/wire", "ingest/fields", "ingest/bounds", "ingest/session", "ingest/session_types",
        "ingest/subscriptions", "ingest/liveness", "ingest/timers", "ingest/reconcile",
        "ingest/normalize/__init__", "ingest/normalize/normalizer", "ingest/normalize/quote_state", "ingest/normalize/trading",
        "ingest/normalize/account", "ingest/normalize/history", "ingest/normalize/control"]  # fmt: skip
PURE_PACKAGES = ["ingest"]
FORBIDDEN = {"asyncio", "aiohttp", "aiokafka", "redis", "websockets", "picows", "prometheus_client", "socket",
             "bridge.metrics", "bridge.metering", "bridge.sinks.kafka", "bridge.sinks.redis", "bridge.app",
             "bridge.gateway.connection", "bridge.gateway.rest", "time"}  # fmt: skip
ADAPTERS = ["sinks/kafka", "sinks/redis", "sinks/memory", "sinks/stdout", "gateway/connection", "gateway/rest"]
DELIVERY = ["delivery/buffer", "delivery/spool", "delivery/spool_format", "delivery/spool_reader", "delivery/observer",
            "publisher"]
CLIENTS = {"aiokafka", "redis", "websockets", "picows", "prometheus_client", "bridge.metrics", "bridge.sinks.kafka",
           "bridge.sinks.redis"}  # fmt: skip
MAX_MODULE_LINES = 400  # non-blank lines, as the house style measures them
MAX_CLASS_LINES = 300


def modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def name_of(path: Path) -> str:
    return str(path.relative_to(ROOT).with_suffix(""))


def dotted(path: Path) -> str:
    name = "bridge." + name_of(path).replace("/", ".")
    return name.removesuffix(".__init__")


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


def _imports(nodes: Iterator[ast.AST] | list[ast.AST]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # ``from bridge.ingest import wire`` imports the module bridge.ingest.wire
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_modules(path: Path) -> set[str]:
    """What the module imports at run time (module names, and ``from`` names as submodules)."""
    return _imports(_runtime_nodes(ast.parse(path.read_text())))


def all_imports(path: Path, known: set[str]) -> set[str]:
    """Every module of ``known`` this module imports, ``TYPE_CHECKING`` blocks and function bodies
    included; ``from package import module`` counts as importing that module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
    return names & known


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


def test_every_listed_module_exists() -> None:
    listed = PURE + ADAPTERS + DELIVERY
    missing = [name for name in listed if not (ROOT / f"{name}.py").exists()]
    assert not missing, f"listed but not found (renamed? update the lists here): {missing}"


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_every_module_of_a_pure_package_is_listed_as_pure(package: str) -> None:
    unlisted = [name_of(p) for p in (ROOT / package).rglob("*.py") if name_of(p) not in PURE]
    assert not unlisted, f"{unlisted} are in the pure package {package}/: add them to PURE"


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_no_io_client_or_metrics(name: str) -> None:
    bad = sorted(m for m in imported_modules(ROOT / f"{name}.py") if violates(m, FORBIDDEN))
    assert not bad, f"bridge/{name}.py imports {bad}"


@pytest.mark.parametrize("name", DELIVERY)
def test_delivery_core_uses_no_broker_client_and_no_metrics_library(name: str) -> None:
    bad = sorted(m for m in imported_modules(ROOT / f"{name}.py") if violates(m, CLIENTS))
    assert not bad, f"bridge/{name}.py imports {bad}"


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapters_never_import_each_other(name: str) -> None:
    others = {"bridge." + a.replace("/", ".") for a in ADAPTERS if a != name}
    bad = sorted(m for m in imported_modules(ROOT / f"{name}.py") if violates(m, others))
    assert not bad, f"bridge/{name}.py imports {bad}"


def test_only_the_composition_root_names_concrete_sinks() -> None:
    concrete = {"bridge.sinks.kafka", "bridge.sinks.redis"}
    offenders = [name_of(p) for p in modules()
                 if p.name not in ("app.py", "cli.py") and not p.match("sinks/*")
                 and any(violates(m, concrete) for m in imported_modules(p))]  # fmt: skip
    assert not offenders, f"{offenders} name concrete sinks; only app.py may"


def import_graph() -> dict[str, set[str]]:
    known = {dotted(p): p for p in modules()}
    return {name: all_imports(path, set(known)) - {name} for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as the list of modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycle_anywhere_type_checking_and_function_level_imports_included() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def non_blank(lines: list[str]) -> int:
    return sum(1 for line in lines if line.strip())


@pytest.mark.parametrize("path", modules(), ids=name_of)
def test_no_module_is_over_the_size_limit(path: Path) -> None:
    count = non_blank(path.read_text().splitlines())
    assert count <= MAX_MODULE_LINES, f"bridge/{name_of(path)}.py has {count} non-blank lines"


@pytest.mark.parametrize("path", modules(), ids=name_of)
def test_no_class_is_over_the_size_limit(path: Path) -> None:
    lines = path.read_text().splitlines()
    big = [(node.name, count) for node in ast.walk(ast.parse("\n".join(lines)))
           if isinstance(node, ast.ClassDef)
           and (count := non_blank(lines[node.lineno - 1 : node.end_lineno])) > MAX_CLASS_LINES]  # fmt: skip
    assert not big, f"bridge/{name_of(path)}.py: classes over {MAX_CLASS_LINES} non-blank lines: {big}"


def _own_privates(cls: ast.ClassDef) -> set[str]:
    """The attributes a class declares: ``self.<name>`` anywhere in it and its ``__slots__`` strings."""
    names: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def _written(node: ast.AST) -> list[ast.expr]:
    """What an assignment (or ``setattr``) writes to."""
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
        name = node.args[1] if len(node.args) > 1 else None
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return [ast.Attribute(value=node.args[0], attr=name.value, lineno=node.lineno)]
        return []
    else:
        return []
    return [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple | ast.List) else [t])]


def _is_foreign_private(target: ast.expr, allowed: set[str]) -> bool:
    return (isinstance(target, ast.Attribute) and target.attr.startswith("_")
            and not target.attr.startswith("__") and target.attr not in allowed
            and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls")))  # fmt: skip


def private_writes(source: str) -> list[str]:
    """Writes to ``obj._name`` where ``obj`` is not ``self``/``cls`` and no enclosing class declares
    ``_name`` itself (a class may set its own attribute on another instance of it)."""
    found: list[str] = []

    def check(node: ast.AST, allowed: set[str]) -> None:
        if isinstance(node, ast.ClassDef):
            allowed = allowed | _own_privates(node)
        found.extend(f"line {t.lineno}: {ast.unparse(t)}" for t in _written(node) if _is_foreign_private(t, allowed))
        for child in ast.iter_child_nodes(node):
            check(child, allowed)

    check(ast.parse(source), set())
    return found


@pytest.mark.parametrize("path", modules(), ids=name_of)
def test_no_code_writes_another_objects_private_attribute(path: Path) -> None:
    found = private_writes(path.read_text())
    assert not found, f"bridge/{name_of(path)}.py writes private attributes of other objects: {found}"


def test_the_private_write_check_flags_writes_on_other_objects_only() -> None:
    source = (
        "class A:\n"
        "    __slots__ = ('_x',)\n"
        "    def f(self, other):\n"
        "        self._y = 1\n"
        "        other._x = 2\n"  # its own attribute, on another instance: allowed
        "def g(a):\n"
        "    a._x = 3\n"
        "    a._x, b = 4, 5\n"
        "    setattr(a, '_z', 6)\n"
    )
    assert [f.split(":")[0] for f in private_writes(source)] == ["line 7", "line 8", "line 9"]


# argparse names no public type for what add_subparsers() returns; annotations use this one
FOREIGN_PRIVATES_ALLOWED = {"_SubParsersAction"}


def _declared_here(tree: ast.Module) -> set[str]:
    """The private names a module declares itself: functions, classes, class attributes,
    ``self.<name>`` attributes and ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return names


def foreign_private_reads(source: str) -> list[str]:
    """Reads of ``obj._name`` (or ``getattr(obj, "_name")``) where ``obj`` is not ``self``/``cls``
    and ``_name`` is not declared in this module: another module's or library's internals."""
    tree = ast.parse(source)
    allowed = _declared_here(tree) | FOREIGN_PRIVATES_ALLOWED
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            name = node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):  # fmt: skip
            name = node.args[1].value
        if name and name.startswith("_") and not name.startswith("__") and name not in allowed:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", modules(), ids=name_of)
def test_no_code_reads_another_modules_or_librarys_private_attributes(path: Path) -> None:
    found = foreign_private_reads(path.read_text())
    assert not found, f"bridge/{name_of(path)}.py reaches into private attributes: {found}"


def test_the_private_read_check_flags_library_internals() -> None:
    source = (
        "class C:\n"
        "    def __init__(self, ws, transport):\n"
        "        self.writer = ws._writer\n"  # the library's private attribute
        "        self._inner = getattr(transport, '_ssl_protocol', None)\n"
        "    async def f(self):\n"
        "        await self.writer._drain_helper()\n"
        "        self._own()\n"
        "    def _own(self, other):\n"
        "        return other._inner\n"  # declared in this module: allowed
    )
    assert [f.split(":")[0] for f in foreign_private_reads(source)] == ["line 3", "line 4", "line 6"]


@pytest.mark.parametrize("path", modules(), ids=name_of)
def test_settings_are_never_copied_as_a_dict(path: Path) -> None:
    """Settings have one home each (the session's: ``ingest.session_types.SessionSettings``,
    validated into by ``config``): no ``model_dump()`` copy into another type."""
    calls = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in ("model_dump", "model_fields_set")]  # fmt: skip
    assert not calls, f"bridge/{name_of(path)}.py copies settings as a dict at lines {calls}"
