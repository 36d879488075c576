"""Every bound on a learned quantity has its seed table.

A test that takes the ``learned`` fixture (see ``tests/conftest.py``) checks
an accuracy, an attack success rate or an ε reached against a bound; the
bound must come from a measurement over several seeds, kept in the test
module's docstring by ``python simulations/seed_table.py --write``. This
test fails if a learned test has no row there, if a table row names a
check that no longer exists, or if a recorded worst value misses its bound.
"""

from __future__ import annotations

import ast
import re

import pytest

from tests.helpers import ROOT

TESTS = ROOT / "tests"
ROW = re.compile(r"^\| (test_\w+)(\[[^|]*\])? \| ([^|]+) \| ([\d,]+) \| (-?[\d.]+) \| (>=|<=) (-?[\d.e+-]+) \| (-?[\d.]+) \|$")


def _learned_tests(tree: ast.Module) -> set[str]:
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("test_")
        and any(arg.arg == "learned" for arg in node.args.args)
    }


def _modules():
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if _learned_tests(tree):
            yield path


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: p.name)
def test_each_learned_test_has_rows_in_its_module_seed_table(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree) or ""
    assert "Seed table (" in doc, f"{path.name}: no seed table in the module docstring"
    rows = [ROW.match(line) for line in doc.splitlines() if line.startswith("| test_")]
    assert all(rows), [line for line in doc.splitlines() if line.startswith("| test_") and not ROW.match(line)]
    tabled = {m.group(1) for m in rows}
    assert _learned_tests(tree) <= tabled, _learned_tests(tree) - tabled
    assert tabled <= _learned_tests(tree), f"rows for tests that no longer take `learned`: {tabled - _learned_tests(tree)}"
    for m in rows:
        seeds = m.group(4).split(",")
        assert len(set(seeds)) >= 5, f"{m.group(1)}: seeds {m.group(4)}, at least 5 are needed"
        worst, op, bound = float(m.group(5)), m.group(6), float(m.group(7))
        assert (worst > bound) if op == ">=" else (worst < bound), m.group(0)  # a margin, not a tie


def test_every_module_with_learned_checks_is_found():
    names = {p.name for p in _modules()}
    assert {"test_robustness.py", "test_event_loop.py", "test_dp_sgd.py"} <= names
