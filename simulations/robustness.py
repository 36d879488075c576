"""Robustness matrix: every aggregator against every attack, 20% attackers.

What is run
-----------
The sweep ``simulations/experiments/robustness.yaml``: ``configs/robustness.yaml``
(digits, 20 IID clients, synchronous rounds of all 20 clients, 30 rounds,
1 local epoch, ``strategy.robust.f = 4``), with 4 of the 20 clients
malicious (``attack.fraction = 0.2``, the same ids for every cell of a seed)
and, per cell, ``strategy.aggregator`` and ``attack`` overridden as the
spec's ``aggregator`` and ``attack`` axes list them. The cells run on
fedstale's sweep engine (:mod:`fedstale.sweep`: in process on
:class:`fedstale.simulation.local_grid.LocalGrid`, as Ray tasks, resumable;
the virtual clock makes each cell deterministic for a seed) and are
averaged over ``--seeds`` seeds (0, 1, ...).

``--mode async`` runs the same matrix with FedBuff (C = 10, K = 12,
f = 2, robust reducers over each buffer) instead of synchronous rounds.

Output
------
A markdown table of final test accuracy (%) per aggregator × attack, the
backdoor's attack success rate (%), and a CSV with every cell and seed,
written to ``--out`` (default ``results/robustness/``), whose
``sweep_<mode>/`` holds the cells' run folders (``fedstale report`` draws
them). The last line names the two files.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from fedstale.results import read_csv  # noqa: E402
from fedstale.sweep import Axis, is_finished, load_spec, run_sweep  # noqa: E402

SPEC = REPO / "simulations" / "experiments" / "robustness.yaml"
"""The sweep: its ``attack`` axis gives the rows, its ``aggregator`` axis the columns."""

ASYNC_OVERRIDES = {
    "strategy.name": "fedbuff",
    "strategy.mode": "async",
    "strategy.concurrency": 10,
    "strategy.buffer_size": 12,
    "strategy.robust.f": 2,
    "strategy.robust.beta": 0.2,
    "stop.num_updates": 50,
}
"""``--mode async``: FedBuff, 10 clients training at once, buffers of 12
(Bulyan with f = 2 needs 11), 50 versions: the same 600 client updates."""


def _select(axis: Axis, wanted: str, parser: argparse.ArgumentParser) -> list[str]:
    """Keep the values of ``axis`` whose labels are listed in ``wanted`` (comma-separated)."""
    names = [w.strip() for w in wanted.split(",")] if wanted else list(axis.labels)
    for name in names:
        if name not in axis.labels:
            parser.error(f"unknown {axis.name} '{name}'; choose from {', '.join(axis.labels)}")
    keep = [axis.labels.index(n) for n in names]
    axis.values = [axis.values[i] for i in keep]
    axis.labels = [axis.labels[i] for i in keep]
    return names


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    spec = load_spec(SPEC)
    axes = {a.name: a for a in spec.axes}
    parser = argparse.ArgumentParser(
        description="Final accuracy of every aggregator under every attack (20% attackers, digits)."
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per cell (default: 1)")
    parser.add_argument("--mode", choices=("sync", "async"), default="sync",
                        help="sync rounds of 20 clients (default) or FedBuff async buffers")
    parser.add_argument("--aggregators", default="",
                        help="comma-separated column labels to run (default: all of "
                        + ", ".join(axes["aggregator"].labels) + ")")
    parser.add_argument("--attacks", default="",
                        help="comma-separated row labels to run (default: all of "
                        + ", ".join(axes["attack"].labels) + ")")
    parser.add_argument("--workers", type=int, default=None,
                        help="cells at once (default: the CPU count; 0: in this process, without Ray)")
    parser.add_argument("--out", default="results/robustness", help="output folder")
    args = parser.parse_args(argv)
    columns = _select(axes["aggregator"], args.aggregators, parser)
    rows = _select(axes["attack"], args.attacks, parser)
    spec.seeds = list(range(args.seeds))
    if args.mode == "async":
        spec.overrides.update(ASYNC_OVERRIDES)

    out = Path(args.out)
    result = run_sweep(spec, out / f"sweep_{args.mode}", workers=args.workers)
    cells: dict[tuple[str, str], list[dict[str, float]]] = {}
    csv_path = out / f"robustness_{args.mode}.csv"
    md_path = out / f"robustness_{args.mode}.md"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mode", "attack", "aggregator", "seed", "accuracy", "attack_success"])
        for cell in result.cells:
            if not is_finished(cell.run_dir):
                continue  # failed: listed below
            attack, column = cell.labels["attack"], cell.labels["aggregator"]
            final = [r for r in read_csv(cell.run_dir / "metrics.csv") if r["accuracy"] != ""][-1]
            success = final.get("attack_success", "")
            value = {
                "accuracy": 100.0 * float(final["accuracy"]),
                "attack_success": float("nan") if success == "" else 100.0 * float(success),
            }
            cells.setdefault((attack, column), []).append(value)
            writer.writerow([args.mode, attack, column, cell.seed,
                             f"{value['accuracy']:.2f}", f"{value['attack_success']:.2f}"])
            print(f"  {attack:<14} {column:<16} seed {cell.seed}: acc {value['accuracy']:.1f}%"
                  + ("" if value["attack_success"] != value["attack_success"]
                     else f", backdoor success {value['attack_success']:.1f}%"), flush=True)

    def mean(attack: str, column: str, key: str) -> float:
        return statistics.fmean(c[key] for c in cells.get((attack, column), [{key: math.nan}]))

    lines = [
        f"Test accuracy (%) after {'30 rounds of 20 clients' if args.mode == 'sync' else '600 updates (FedBuff, C=10, K=12, f=2)'}, "
        f"digits, 20 IID clients of which 4 malicious, mean of {args.seeds} seed(s)",
        "",
        "| attack | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for attack in rows:
        lines.append(f"| {attack} | " + " | ".join(f"{mean(attack, c, 'accuracy'):.1f}" for c in columns) + " |")
    if "backdoor x5" in rows:
        lines.append("| backdoor x5: attack success | "
                     + " | ".join(f"{mean('backdoor x5', c, 'attack_success'):.1f}" for c in columns) + " |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print()
    print("\n".join(lines))
    print(f"\n({result.wall:.0f}s; {len(result.skipped)} cells already finished)")
    if result.failed:
        print("failed cells: " + ", ".join(o.name for o in result.failed))
    print(f"wrote {md_path} and {csv_path}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
