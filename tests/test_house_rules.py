"""The house rules of docs/architecture.md, measured from the source (the AST), so they cannot drift.

* no import cycle among ganzip's modules (module-level imports, a submodule
  import counting its packages' ``__init__``);
* no function-level import of a ganzip module, except in click command bodies
  (``ganzip/cli/``, entry points kept lazy so that ``ganzip --help`` is quick)
  and the lazy attributes of ``ganzip/__init__.py``;
* no function over 80 lines and no module over 500;
* the ``"ganzip.format"`` metadata key is spelled in ``ganzip/formats.py`` only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ganzip"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
LAZY_ALLOWED = ("ganzip.cli", "ganzip.__main__")


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_name(p): p for p in sorted(PKG.rglob("*.py"))}
TREES = {m: ast.parse(p.read_text(encoding="utf-8")) for m, p in MODULES.items()}


def _targets(module: str, node: ast.AST) -> list[str]:
    """The ganzip modules an import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "ganzip"]
    base = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "ganzip":
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def _imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules imported at module level, [(line, module) imported inside a function])."""
    top: set[str] = set()
    nested: list[tuple[int, str]] = []

    def visit(body, in_function: bool) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(module, node):
                    (nested.append((node.lineno, t)) if in_function else top.add(t))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, True)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue  # typing-only imports run nothing
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        visit([c for c in children if isinstance(c, ast.AST)], in_function)
                if isinstance(node, ast.ExceptHandler):
                    visit(node.body, in_function)

    visit(TREES[module].body, False)
    return top, nested


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for t in _imports(m)[0]:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                c = ".".join(parts[:i])
                if c in MODULES and c != m and not m.startswith(c + "."):
                    graph[m].add(c)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            strong(v)
    return groups


def test_there_is_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_imports_a_ganzip_module_outside_the_entry_points():
    found = [f"{m}:{line} imports {t}" for m in MODULES if m != "ganzip" and not m.startswith(LAZY_ALLOWED)
             for line, t in _imports(m)[1]]
    assert found == []


def test_functions_are_short():
    long = []
    for m, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{m}:{node.name} ({lines} lines)")
    assert long == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small(module):
    assert len(MODULES[module].read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES


def test_the_format_key_is_spelled_once():
    spelled = [m for m, p in MODULES.items() if m != "ganzip.formats" and '"ganzip.format"' in p.read_text(encoding="utf-8")]
    assert spelled == []
