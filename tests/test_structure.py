"""The shape of the package: layers, no import cycles, no private names across modules, sizes.

Every ``import`` of a project module is read from the source (``ast``), at module level and inside
functions alike. Each module belongs to a layer (:data:`LAYERS`, lowest first); a module may import
only from its own layer or lower ones, and the module graph has no cycle (inside a layer too).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "mtlcli"

# Lowest first. A module matches the longest prefix listed here.
LAYERS: list[tuple[str, ...]] = [
    ("mtlcli.errors", "mtlcli.events", "mtlcli.fsio", "mtlcli.tfutil", "mtlcli.distribute"),
    ("mtlcli.weighting",),
    ("mtlcli.recipe",),
    ("mtlcli.data",),
    ("mtlcli.model",),
    ("mtlcli.run", "mtlcli.compare", "mtlcli.sweep", "mtlcli.tune"),
    ("mtlcli.scaffold", "mtlcli.views", "mtlcli.cli", "mtlcli.__main__", "mtlcli"),
]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        out[name] = f
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{module} is in no layer of tests/test_structure.py"
    return level


def _target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names taken from it)`` for every project import of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mtlcli"):
                    out.append((a.name, node.lineno, []))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            if not base.startswith("mtlcli"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:
                    out.append((sub, node.lineno, []))
                else:
                    out.append((base, node.lineno, [a.name]))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            out.append(("__import__", node.lineno, []))
    return out


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for name, _, _ in _imports(m):
            t = _target(name)
            # A submodule importing its own package's __init__ is not an edge (Python runs it first).
            if t and t != m and not m.startswith(t + "."):
                edges[m].add(t)
    return edges


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_no_upward_imports():
    bad = []
    for m in MODULES:
        for name, line, _ in _imports(m):
            t = _target(name)
            if t and t != m and not m.startswith(t + ".") and _layer(t) > _layer(m):
                bad.append(f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {t} (a higher layer)")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    edges = _edges()
    cycles = []

    def reach(a: str) -> set[str]:
        seen, todo = set(), [a]
        while todo:
            for b in edges[todo.pop()]:
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    for m in sorted(MODULES):
        if m in reach(m):
            cycles.append(m)
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_no_dunder_import_of_project_modules():
    bad = [f"{m}:{line}" for m in MODULES for name, line, _ in _imports(m) if name == "__import__"]
    assert not bad, f"__import__ hides an import: {bad}"


def test_no_private_names_across_modules():
    bad = []
    for m in MODULES:
        tree = ast.parse(MODULES[m].read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mtlcli"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{m}:{node.lineno} imports {node.module}.{a.name}")
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{m}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
        for name in MODULES:
            last = name.rpartition(".")[2]
            if last.startswith("_") and not last.startswith("__"):
                bad.append(f"{name} is a private module")
    assert not sorted(set(bad)), "\n".join(sorted(set(bad)))


def test_every_module_opens_with_a_docstring():
    missing = [
        m
        for m, f in MODULES.items()
        if f.read_text().strip() and not ast.get_docstring(ast.parse(f.read_text()))
    ]
    assert not missing, f"modules without a docstring: {missing}"


def test_module_sizes():
    big = {m: n for m, f in MODULES.items() if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_function_sizes():
    long = []
    for m, f in MODULES.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert not long, "\n".join(long)
