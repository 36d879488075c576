"""The suite's parallel layout (``tests/conftest.py``): xdist groups reach the scheduler.

``addopts`` runs the suite with ``-n auto --dist loadgroup``: each
``xdist_group`` (by default a test module) runs on one worker. pytest-xdist
puts a test in its group by appending ``@group`` to the test's node id on
the worker; if that stops working (pytest 9.2's new node ids did this to
xdist 3.8), xdist silently spreads every test on its own and each module's
shared federations and cached runs are built once per worker instead of
once. The first test fails when that happens.
"""

from __future__ import annotations

import pytest

from tests.conftest import bare_nodeid


def test_this_test_runs_in_its_modules_group(request):
    config = request.config
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        pytest.skip("runs under the suite's own `-n auto --dist loadgroup` (pyproject addopts)")
    assert request.node.nodeid == "tests/test_suite_groups.py::test_this_test_runs_in_its_modules_group@test_suite_groups"


@pytest.mark.xdist_group("a-group-of-its-own")
def test_an_explicit_group_replaces_the_module_group(request):
    assert [m.args[0] for m in request.node.iter_markers("xdist_group")] == ["a-group-of-its-own"]


def test_the_seed_table_sees_ids_without_the_group():
    assert bare_nodeid("tests/t.py::test_x[a-b]@robustness-median") == "tests/t.py::test_x[a-b]"
    assert bare_nodeid("tests/t.py::test_x[a@b]") == "tests/t.py::test_x[a@b]"
    assert bare_nodeid("tests/t.py::test_x@t") == "tests/t.py::test_x"
