"""The package's shape: no import cycles, no oversized module or class.

Every module under ``fedstale/`` is parsed with :mod:`ast` (nothing is
imported). An import is an edge from the importing module to the imported
one when the latter is in ``fedstale``: module-level and function-level
imports alike, except those under ``if TYPE_CHECKING:`` (they never run).
Relative imports are resolved, and ``from pkg import name`` is an edge to
``pkg.name`` when ``name`` is a submodule, else to ``pkg``. Importing a
submodule is not counted as importing its parent package.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "fedstale"
ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / PACKAGE

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300

LONG_MODULES: set[str] = set()
"""Modules allowed over :data:`MAX_MODULE_LINES` lines."""


def module_name(path: Path) -> str:
    """``fedstale/a/b.py`` → ``fedstale.a.b``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in ``tree``, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            targets.add(submodule if submodule in known else source)
    return {t for t in targets if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports."""
    found = modules()
    known = set(found)
    return {name: imported_modules(name, path, known) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "cycle of " + ", ".join(component) + ":\n    " + "\n    ".join(edges)


def test_cycle_finder_resolves_relative_and_submodule_imports(tmp_path):
    """A toy package: ``from . import b`` (a submodule), ``from .c import X`` (a name), TYPE_CHECKING."""
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text("from . import b\nA = 1\n")
    (package / "b.py").write_text("def f():\n    from .c import X\n    return X\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nX = 2\n"
    )
    paths = {p.stem if p.stem != "__init__" else "": p for p in package.glob("*.py")}
    names = {("toy." + stem).rstrip("."): path for stem, path in paths.items()}
    graph = {n: imported_modules(n, p, set(names)) for n, p in names.items()}
    assert graph == {"toy": {"toy.a"}, "toy.a": {"toy.b"}, "toy.b": {"toy.c"}, "toy.c": set()}
    assert cycles(graph) == []
    graph["toy.c"] = {"toy.a"}
    assert cycles(graph) == [["toy.a", "toy.b", "toy.c"]]


def test_no_import_cycles():
    """No module imports, directly or not, a module that imports it.

    Until the config branch is merged, ``fedstale.config`` imports
    ``fedstale.builders`` (for the reducer check) and this test fails on that
    one cycle; it is not special-cased.
    """
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(_describe(c, graph) for c in found)


def test_no_module_over_500_lines():
    long = {}
    for path in modules().values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        relative = path.relative_to(ROOT).as_posix()
        if lines > MAX_MODULE_LINES and relative not in LONG_MODULES:
            long[relative] = lines
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_class_over_300_lines():
    large = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_CLASS_LINES:
                    large[f"{name}.{node.name}"] = lines
    assert not large, f"classes over {MAX_CLASS_LINES} lines: {large}"
