"""Robustness matrix: every aggregator against every attack, 20% attackers.

What is run
-----------
``configs/robustness.yaml`` (digits, 20 IID clients, synchronous rounds of
all 20 clients, 30 rounds, 1 local epoch, ``strategy.robust.f = 4``), with
4 of the 20 clients malicious (``attack.fraction = 0.2``, the same ids for
every cell of a seed) and, per cell, ``strategy.aggregator`` and ``attack``
overridden as listed in ``AGGREGATORS`` and ``ATTACKS`` below. Each cell is
run in process on :class:`fedstale.simulation.local_grid.LocalGrid` (the
virtual clock makes it deterministic for a seed) and averaged over
``--seeds`` seeds.

``--mode async`` runs the same matrix with FedBuff (C = 10, K = 12,
f = 2, robust reducers over each buffer) instead of synchronous rounds.

Output
------
A markdown table of final test accuracy (%) per aggregator × attack, the
backdoor's attack success rate (%), and a CSV with every cell and seed,
written to ``--out`` (default ``results/robustness/``). The last line names
the two files.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from fedstale.config import load_config  # noqa: E402
from fedstale.simulation.local_grid import run_in_process  # noqa: E402
from fedstale.strategies import MemoryRecorder  # noqa: E402

AGGREGATORS: dict[str, str] = {
    "FedAvg": "mean",
    "Median": "median",
    "TrMean": "trimmed_mean",
    "Krum": "krum",
    "MultiKrum": "multi_krum",
    "Bulyan": "bulyan",
    "GeoMed": "geometric_median",
    "CClip": "centered_clipping",
    "Clip>NNM>TrMean": "clip>nnm>trimmed_mean",
}
"""Column label → ``strategy.aggregator``."""

ATTACKS: dict[str, dict[str, Any]] = {
    "clean": {"attack.name": "none"},
    "sign flip x1": {"attack.name": "sign_flip", "attack.boost": 1.0},
    "sign flip x5": {"attack.name": "sign_flip", "attack.boost": 5.0},
    "scaling x10": {"attack.name": "scaling", "attack.scale": 10.0},
    "model scaling x10": {"attack.name": "model_scaling", "attack.scale": 10.0},
    "Gaussian s=1": {"attack.name": "gaussian", "attack.sigma": 1.0},
    "label flip": {"attack.name": "label_flip", "attack.poison_fraction": 1.0},
    "IPM e=10": {"attack.name": "ipm", "attack.epsilon": 10.0},
    "ALIE z=1.5": {"attack.name": "alie", "attack.z": 1.5},
    "backdoor x5": {"attack.name": "backdoor", "attack.boost": 5.0},
}
"""Row label → attack overrides."""

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

# Parameters of each aggregator that depend on the buffer size.
CLIP_NORMS = {"sync": 1.0, "async": 1.0}


def run_cell(aggregator: str, attack: dict[str, Any], seed: int, mode: str) -> dict[str, float]:
    """Final accuracy and backdoor success of one cell."""
    overrides: dict[str, Any] = {
        "run.seed": seed,
        "strategy.aggregator": aggregator,
        "strategy.robust.cc_tau": 0.1,
        "strategy.robust.clip_norm": CLIP_NORMS[mode],
        **attack,
    }
    if mode == "async":
        overrides.update(ASYNC_OVERRIDES)
    config = load_config(REPO / "configs" / "robustness.yaml", overrides)
    recorder = MemoryRecorder()
    run_in_process(config, recorder)
    final = recorder.evaluations[-1]
    success = final.get("attack_success", "")
    return {
        "accuracy": 100.0 * float(final["accuracy"]),
        "attack_success": float("nan") if success == "" else 100.0 * float(success),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description="Final accuracy of every aggregator under every attack (20% attackers, digits)."
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per cell (default: 1)")
    parser.add_argument("--mode", choices=("sync", "async"), default="sync",
                        help="sync rounds of 20 clients (default) or FedBuff async buffers")
    parser.add_argument("--aggregators", default=",".join(AGGREGATORS),
                        help="comma-separated column labels to run (default: all)")
    parser.add_argument("--attacks", default=",".join(ATTACKS),
                        help="comma-separated row labels to run (default: all)")
    parser.add_argument("--out", default="results/robustness", help="output folder")
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    columns = [c.strip() for c in args.aggregators.split(",")]
    rows = [r.strip() for r in args.attacks.split(",")]
    for name in columns:
        if name not in AGGREGATORS:
            parser.error(f"unknown aggregator '{name}'; choose from {', '.join(AGGREGATORS)}")
    for name in rows:
        if name not in ATTACKS:
            parser.error(f"unknown attack '{name}'; choose from {', '.join(ATTACKS)}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"robustness_{args.mode}.csv"
    md_path = out / f"robustness_{args.mode}.md"
    started = time.perf_counter()
    cells: dict[tuple[str, str], list[dict[str, float]]] = {}
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mode", "attack", "aggregator", "seed", "accuracy", "attack_success"])
        for attack in rows:
            for column in columns:
                for seed in range(args.seeds):
                    cell = run_cell(AGGREGATORS[column], ATTACKS[attack], seed, args.mode)
                    cells.setdefault((attack, column), []).append(cell)
                    writer.writerow([args.mode, attack, column, seed,
                                     f"{cell['accuracy']:.2f}", f"{cell['attack_success']:.2f}"])
                    handle.flush()
                    print(f"  {attack:<14} {column:<16} seed {seed}: acc {cell['accuracy']:.1f}%"
                          + ("" if cell["attack_success"] != cell["attack_success"]
                             else f", backdoor success {cell['attack_success']:.1f}%"), flush=True)

    def mean(attack: str, column: str, key: str) -> float:
        return statistics.fmean(c[key] for c in cells[(attack, column)])

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
    print(f"\n({time.perf_counter() - started:.0f}s)")
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
