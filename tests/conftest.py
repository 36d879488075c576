"""Shared fixtures: quiet Flower logs, and ``learned`` for measured quantities.

A test that asserts a learned quantity (an accuracy, an attack success rate,
an ε reached, a speed-up) checks it through the ``learned`` fixture::

    def test_fedbuff_learns(learned):
        ...
        learned.at_least("final accuracy", accuracy, 0.85)

Such tests carry the ``learned`` marker (added here), and their thresholds
come from a seed table in the test module's docstring:
``python simulations/seed_table.py`` runs ``pytest -m learned`` once per
seed with ``FEDSTALE_TEST_SEED`` set (:data:`tests.helpers.SEED`) and
``FEDSTALE_SEED_TABLE`` naming a JSON-lines file; each check appends its
value there, and all of a test's checks are evaluated before it fails, so
one bad seed does not hide the other statistics.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from flwr.common.logger import FLOWER_LOGGER

from tests.helpers import SEED

TABLE = os.environ.get("FEDSTALE_SEED_TABLE", "")
"""Where ``learned`` appends its measurements (empty: nowhere)."""

# One data cache (:mod:`fedstale.data.cache`) for every process of the suite:
# the e2e tests run their ServerApps and ClientApps in temporary working
# directories, where the default cache (``.cache/fedstale`` of the working
# directory) starts empty, so each of them would import scikit-learn and
# flwr-datasets and split and partition the digits again (~3-6 CPU-s a
# `flwr run` on these 2 cores). Set here, before pytest-xdist starts its
# workers, it reaches them and every Flower process they start. Entries are
# keyed by their inputs and library versions, so sharing never changes a
# result; the tests of the cache itself and of the cold path set their own.
os.environ.setdefault("FEDSTALE_DATA_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "fedstale"))


@pytest.fixture(autouse=True)
def _quiet_flower_logs():
    """Keep Flower's INFO lines out of the test output."""
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.WARNING)
    yield
    FLOWER_LOGGER.setLevel(level)


def pytest_xdist_auto_num_workers(config):
    """Workers for ``-n auto`` (``addopts``): ``FEDSTALE_TEST_WORKERS``, or twice the
    CPUs (at most 8). Half the suite's time is real Flower processes waiting
    (SuperNodes polling, Ray starting), so more workers than cores pay off."""
    del config
    if os.environ.get("FEDSTALE_TEST_WORKERS"):
        return int(os.environ["FEDSTALE_TEST_WORKERS"])
    return min(8, 2 * (os.cpu_count() or 1))


@pytest.hookimpl(tryfirst=True)  # before xdist appends the group to each test's id
def pytest_collection_modifyitems(items):
    """Mark every test that uses the ``learned`` fixture; put each test without
    an ``xdist_group`` in its module's group; run the groups with real Flower
    processes (``e2e``) first.

    ``--dist loadgroup`` (``addopts``) sends each group to one worker, so a
    module's module-scoped federations and cached runs are built once, as with
    ``loadscope``. Modules whose tests share nothing costly split themselves
    into several groups (``@pytest.mark.xdist_group("name")``) so that no one
    worker is left with most of the suite's longest module. The longest groups
    are the ``e2e`` ones; starting them first keeps them out of the suite's tail.
    """
    for item in items:
        if "learned" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.learned)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))

    def group(item) -> str:
        return item.get_closest_marker("xdist_group").args[0]

    e2e_groups = {group(item) for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: group(item) not in e2e_groups)  # stable: order within a group kept


def bare_nodeid(nodeid: str) -> str:
    """A test's id without the ``@group`` suffix xdist's ``loadgroup`` adds."""
    at, bracket = nodeid.rfind("@"), nodeid.rfind("]")
    return nodeid[:at] if at > bracket else nodeid


class Learned:
    """Checks of learned quantities against their bounds, recorded per seed.

    Without ``FEDSTALE_SEED_TABLE`` a failed check raises at once; with it,
    every check of the test is recorded and the failures are raised together
    when the test ends.
    """

    def __init__(self, nodeid: str) -> None:
        self.nodeid = bare_nodeid(nodeid)
        self.failures: list[str] = []

    def at_least(self, name: str, value: float, floor: float) -> None:
        """Check ``value >= floor``."""
        self._check(name, float(value), ">=", floor, float(value) >= floor)

    def at_most(self, name: str, value: float, ceiling: float) -> None:
        """Check ``value <= ceiling``."""
        self._check(name, float(value), "<=", ceiling, float(value) <= ceiling)

    def _check(self, name: str, value: float, op: str, bound: float, ok: bool) -> None:
        message = f"{name}: {value:.4f}, expected {op} {bound:g} (seed {SEED})"
        if TABLE:
            record = {"test": self.nodeid, "stat": name, "value": value, "op": op,
                      "bound": bound, "seed": SEED, "ok": ok}
            with Path(TABLE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            if not ok:
                self.failures.append(message)
        elif not ok:
            raise AssertionError(message)


@pytest.fixture
def learned(request):
    """A :class:`Learned` for this test."""
    checks = Learned(request.node.nodeid)
    yield checks
    if checks.failures:
        pytest.fail("; ".join(checks.failures))
