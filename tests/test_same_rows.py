"""The shipped configs still produce the rows they produced before (golden files).

Each case of :data:`tests.golden_rows.CASES` runs a shipped config in process
(``default`` for its full 200 versions, the others with fewer
``stop.num_updates``) and compares its ``metrics.csv`` and ``clients.csv``
rows with ``tests/golden/<case>.metrics.csv`` and ``<case>.clients.csv``.
They guard the event loop's behaviour: which client trains when, on which
model version, with which staleness, seed, learning rate, bytes and virtual
duration, and what is counted (``tests/test_architecture.py`` keeps its
structure in check).

Why only some columns. CI runs on other x86 CPUs, where torch may round
training floats differently (another SIMD kernel, another reduction order).
So the golden files hold only the columns that do not depend on training
floats: in ``clients.csv`` ``task_id``, ``client_id``, ``node``,
``dispatch_version``, ``arrival_version``, ``staleness``, ``dispatch_time``,
``arrival_time``, ``virtual_duration``, ``num_examples``, ``epochs``, ``lr``,
``bytes_up``, ``bytes_down``, ``accepted`` and ``reason``; in ``metrics.csv``
``version``, ``virtual_time``, ``updates``, ``accepted``, ``dropped``,
``rejected``, ``failures``, ``bytes_up`` and ``bytes_down``. Virtual times
come from the seeded delay model and the reported work, not from training.
Where a decision on training floats sets a column (trust quarantines an
update once its score falls below a threshold), that column is left out of
the case (:data:`tests.golden_rows.FLOAT_DECISIONS`). Accuracy, loss,
weights, training loss and trust are compared exactly, but only between two
runs on one machine, while changing the loop (``--dump`` below).

This was checked by running every case with 2 torch threads instead of 1
(``--compare-threads``, a different reduction order): only ``accuracy``,
``loss``, ``train_loss``, ``weight`` and ``trust`` changed, never a golden
column. Floats are written as ``metrics.csv`` writes them (10 significant
digits).

Regenerate the golden files (only when a change of behaviour is intended, and
say so in the commit)::

    python -m tests.golden_rows --regen            # all cases
    python -m tests.golden_rows --regen default    # one case

Before and after a refactoring of the loop, compare every column, floats
exact, on one machine::

    python -m tests.golden_rows --dump /tmp/before   # on the old commit
    python -m tests.golden_rows --dump /tmp/after    # on the new one
    diff -r /tmp/before /tmp/after
"""

from __future__ import annotations

import pytest

from tests.golden_rows import CASES, GOLDEN, golden_tables, read_table


def _first_difference(kind: str, got: list[list[str]], expected: list[list[str]]) -> str:
    if got[0] != expected[0]:
        return f"{kind}: columns {got[0]} instead of {expected[0]}"
    for number, (row, golden) in enumerate(zip(got[1:], expected[1:]), start=1):
        if row != golden:
            cells = {c: (g, r) for c, g, r in zip(got[0], golden, row) if g != r}
            return f"{kind}: row {number} differs (column: (golden, now)): {cells}"
    return f"{kind}: {len(got) - 1} rows instead of {len(expected) - 1}"


# each case on a worker of its own (tests/conftest.py): they share nothing
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(f"same-rows-{n}")) for n in CASES])
def test_rows_match_the_golden_files(name):
    metrics, clients = golden_tables(name)
    for kind, got in (("metrics", metrics), ("clients", clients)):
        expected = read_table(GOLDEN / f"{name}.{kind}.csv")
        assert got == expected, _first_difference(kind, got, expected)


def test_every_case_has_golden_files_and_nothing_else_is_there():
    names = {f"{name}.{kind}.csv" for name in CASES for kind in ("metrics", "clients")}
    assert {p.name for p in GOLDEN.glob("*.csv")} == names
