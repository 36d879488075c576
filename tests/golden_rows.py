"""Rows of in-process runs of the shipped configs, for ``tests/test_same_rows.py``.

Each case runs a shipped config (some with a smaller ``stop.num_updates``)
on the in-process grid and collects its ``metrics.csv`` and ``clients.csv``
rows. The golden files under ``tests/golden/`` keep only the columns that do
not depend on training floats (see :data:`METRICS_COLUMNS`,
:data:`CLIENT_COLUMNS` and :data:`FLOAT_DECISIONS`), so they hold on any
x86 CPU.

Usage (from the repository root)::

    python -m tests.golden_rows --regen              # rewrite tests/golden/*.csv
    python -m tests.golden_rows --dump DIR           # every column, floats exact
    python -m tests.golden_rows --compare-threads    # columns that change with 2 torch threads

``--dump`` writes every column (floats with ``repr``) and a hash of the final
model for the golden cases and :data:`EXTRA_CASES`; two dumps of the same
machine, before and after a change to the event loop, must be identical
(``diff -r``). ``--compare-threads`` runs each golden case with 1 and with 2
torch threads (a different float reduction order in training) and lists the
columns that differ: none of them may be in the golden files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path
from typing import Any

from fedstale.results import CLIENT_COLUMNS as ALL_CLIENT_COLUMNS
from fedstale.results import METRICS_COLUMNS as ALL_METRICS_COLUMNS
from fedstale.results import WALL_COLUMNS
from fedstale.simulation.local_grid import run_in_process
from fedstale.strategies import MemoryRecorder
from tests.helpers import config

GOLDEN = Path(__file__).resolve().parent / "golden"

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("default", {}),
    "fedasync": ("fedasync", {"stop.num_updates": 200}),
    "fedavg": ("fedavg", {"stop.num_updates": 30}),
    "dynamic": ("dynamic", {"stop.num_updates": 100}),
    "robustness": ("robustness", {"stop.num_updates": 10}),
    "robustness_fedbuff_median_sign_flip_trust": (
        "robustness",
        {
            "stop.num_updates": 10,
            "strategy.name": "fedbuff",
            "strategy.aggregator": "median",
            "attack.name": "sign_flip",
            "attack.boost": 5,
            "strategy.trust.enabled": True,
        },
    ),
    "compression": ("compression", {"stop.num_updates": 100}),
    "dp_sgd": ("dp_sgd", {}),
    "central_dp": ("central_dp", {"stop.num_updates": 20}),
    "secagg": ("secagg", {"stop.num_updates": 100}),
}
"""Golden cases: name → (shipped config, overrides). ``default`` runs in full."""

EXTRA_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "options": (
        "default",
        {
            "stop.num_updates": 60,
            "evaluation.federated_clients": 4,
            "strategy.max_staleness": 2,
            "client.lr_delay_alpha": 0.5,
            "strategy.server_momentum": 0.5,
        },
    ),
    "fedasync_filters_trust": (
        "fedasync",
        {
            "stop.num_updates": 30,
            "strategy.trust.enabled": True,
            "strategy.filter.norm_bound": 2.0,
            "strategy.filter.validation_tolerance": 0.05,
            "data.server_val_size": 100,
            "attack.name": "sign_flip",
            "attack.boost": 5,
        },
    ),
    "virtual_time_budget": ("default", {"stop.num_updates": 1000, "stop.max_virtual_time": 20.0}),
    "target_accuracy": ("default", {"stop.target_accuracy": 0.6}),
    "faults_async": (
        "fedasync",
        {
            "data.num_clients": 12,
            "strategy.concurrency": 4,
            "stop.num_updates": 20,
            "evaluation.every": 6,
            "comm.max_retries": 1,
        },
    ),
    "faults_sync": (
        "fedavg",
        {
            "data.num_clients": 12,
            "strategy.concurrency": 6,
            "stop.num_updates": 8,
            "comm.max_retries": 1,
        },
    ),
}
"""More cases for ``--dump`` only (not golden): options the shipped configs
leave off, and the fault kinds of ``tests/test_faults.py`` (cases named
``faults_*`` run its faulty ClientApp)."""

METRICS_COLUMNS = (
    "version", "virtual_time", "updates", "accepted", "dropped", "rejected", "failures",
    "bytes_up", "bytes_down",
)
"""``metrics.csv`` columns kept in the golden files: the schedule and counts."""

CLIENT_COLUMNS = (
    "task_id", "client_id", "node", "dispatch_version", "arrival_version", "staleness",
    "dispatch_time", "arrival_time", "virtual_duration", "num_examples", "epochs", "lr",
    "bytes_up", "bytes_down", "accepted", "reason",
)
"""``clients.csv`` columns kept in the golden files: the schedule of the run."""

FLOAT_DECISIONS: dict[str, tuple[str, ...]] = {
    "robustness_fedbuff_median_sign_flip_trust": ("accepted", "rejected", "reason"),
}
"""Columns left out of one case's golden files because a decision on training
floats sets them (trust quarantines an update when its score falls below a
threshold)."""


def run_case(name: str, threads: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Run case ``name``; return its metrics rows, client rows and a hash of the final model."""
    base, overrides = {**CASES, **EXTRA_CASES}[name]
    cfg = config(base, **{k.replace(".", "__"): v for k, v in overrides.items()}, client__num_threads=threads)
    options: dict[str, Any] = {}
    if name.startswith("faults_"):
        from tests.test_faults import faulty_app  # pylint: disable=import-outside-toplevel

        options["client_app"] = faulty_app
    recorder = MemoryRecorder()
    result, _ = run_in_process(cfg, recorder, **options)
    digest = hashlib.sha256()
    for key, array in result.arrays.items():
        digest.update(key.encode())
        digest.update(array.numpy().tobytes())
    return recorder.evaluations, recorder.updates, digest.hexdigest()


def cell(value: Any, exact: bool = False) -> str:
    """A CSV cell: floats as ``metrics.csv`` writes them (``.10g``), or exactly (``repr``)."""
    if isinstance(value, float):
        return repr(value) if exact else f"{value:.10g}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: tuple[str, ...], exact: bool = False) -> list[list[str]]:
    """``rows`` as a header and lists of cells."""
    return [list(columns)] + [[cell(row[c], exact) for c in columns] for row in rows]


def golden_columns(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The metrics and client columns of case ``name``'s golden files."""
    skip = FLOAT_DECISIONS.get(name, ())
    return (
        tuple(c for c in METRICS_COLUMNS if c not in skip),
        tuple(c for c in CLIENT_COLUMNS if c not in skip),
    )


def golden_tables(name: str) -> tuple[list[list[str]], list[list[str]]]:
    """What case ``name`` writes into its golden files, computed now."""
    metrics, clients, _ = run_case(name)
    metric_columns, client_columns = golden_columns(name)
    return table(metrics, metric_columns), table(clients, client_columns)


def read_table(path: Path) -> list[list[str]]:
    """A golden CSV file as lists of cells."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def write_table(path: Path, rows: list[list[str]]) -> None:
    """Write lists of cells as a CSV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def regen(names: list[str]) -> None:
    """Rewrite the golden files of ``names``."""
    for name in names:
        metrics, clients = golden_tables(name)
        write_table(GOLDEN / f"{name}.metrics.csv", metrics)
        write_table(GOLDEN / f"{name}.clients.csv", clients)


def dump(out: Path, names: list[str]) -> None:
    """Write every column (floats exact) and the final model's hash of ``names`` into ``out``."""
    metric_columns = tuple(c for c in ALL_METRICS_COLUMNS if c not in WALL_COLUMNS)
    client_columns = tuple(c for c in ALL_CLIENT_COLUMNS if c not in WALL_COLUMNS)
    for name in names:
        metrics, clients, digest = run_case(name)
        write_table(out / name / "metrics.csv", table(metrics, metric_columns, exact=True))
        write_table(out / name / "clients.csv", table(clients, client_columns, exact=True))
        (out / name / "model.sha256").write_text(digest + "\n", encoding="utf-8")


def compare_threads(names: list[str]) -> int:
    """Print the columns of each case that change between 1 and 2 torch threads.

    Returns
    -------
    int
        1 if a golden column changed, else 0.
    """
    status = 0
    for name in names:
        one, two = run_case(name, threads=1), run_case(name, threads=2)
        changed = []
        for kind, columns, index in (("metrics", ALL_METRICS_COLUMNS, 0), ("clients", ALL_CLIENT_COLUMNS, 1)):
            rows_one, rows_two = one[index], two[index]
            if len(rows_one) != len(rows_two):
                changed.append(f"{kind}: {len(rows_one)} vs {len(rows_two)} rows")
                continue
            for column in columns:
                if column in WALL_COLUMNS:
                    continue
                if any(cell(a[column]) != cell(b[column]) for a, b in zip(rows_one, rows_two)):
                    changed.append(f"{kind}.{column}")
        kept = {f"metrics.{c}" for c in golden_columns(name)[0]} | {f"clients.{c}" for c in golden_columns(name)[1]}
        bad = [c for c in changed if c in kept or "rows" in c]
        status |= bool(bad)
        print(f"{name}: changed {', '.join(changed) or 'nothing'}" + (f"  GOLDEN COLUMNS CHANGED: {bad}" if bad else ""))
    return status


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--regen", action="store_true", help="rewrite tests/golden/*.csv")
    group.add_argument("--dump", type=Path, metavar="DIR", help="write every column, floats exact")
    group.add_argument("--compare-threads", action="store_true", help="columns that change with 2 threads")
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    if args.regen:
        regen(args.cases or list(CASES))
        return 0
    if args.dump is not None:
        dump(args.dump, args.cases or [*CASES, *EXTRA_CASES])
        return 0
    return compare_threads(args.cases or list(CASES))


if __name__ == "__main__":
    sys.exit(main())
