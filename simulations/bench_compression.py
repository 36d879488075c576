"""Bytes uploaded to reach a target accuracy: dense vs compressed updates.

What is measured
----------------
For each variant and each seed, the bytes the clients uploaded (``bytes_up``
of ``metrics.csv``: the reply ArrayRecords as Flower serialises them, headers
included) until the global model first reaches the target test accuracy
(default 90 % on the held-out digits test set), with the number of client
updates and the virtual time by then. The headline number is

    ratio = mean bytes uploaded to target, dense
            / mean bytes uploaded to target, compressed

for each compressed variant. It combines the per-update saving (the
``compression_ratio`` column: dense bytes / wire bytes per update, ~5 for
top-10 % with float32 values and int32 indices, ~8 with int8 values) with
the change in the number of updates needed to reach the target (error
feedback keeps it close to the dense number).

Variants
--------
- ``dense``: ``configs/default.yaml`` (FedBuff, C=10, K=5, 20 digits
  clients with Dirichlet(0.5) label skew, Pareto client speeds);
- ``top-10% EF``: ``configs/compression.yaml`` (the same experiment with
  ``compression.method: topk``, ``ratio: 0.1``, ``error_feedback: true``);
- ``top-10% EF int8``: the same with ``compression.quantize: int8``;
- ``top-1% EF``: the same with ``compression.ratio: 0.01``.

How
---
- Overrides applied to every variant: ``run.seed`` (0..seeds-1),
  ``stop.target_accuracy`` (the run stops at the target),
  ``stop.num_updates`` (the version budget, ``--max-versions``, default 300
  buffer flushes = 1,500 updates) and ``evaluation.every: 1``, so the first
  evaluation at or above target is at most K = 5 updates after the crossing.
- Runs are in process on :class:`fedstale.simulation.local_grid.LocalGrid`
  with fedstale's own ClientApp (so the compression mod runs exactly as in
  ``flwr run``) and the virtual clock: deterministic for a seed. Virtual
  time includes the upload at ``delay.bandwidth`` (10 MB/s), so smaller
  uploads also arrive a little sooner.
- A variant that does not reach the target within the budget is reported as
  such; its bytes are those uploaded until it stopped (a lower bound, marked
  ``>=``).

Run from the repository root (about 2 min on 2 cores: ~40 s per seed)::

    python simulations/bench_compression.py [--target 0.9] [--seeds 3]

Nothing is written to disk; the last lines are the dense/compressed ratios.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from fedstale.config import Config, load_config  # noqa: E402
from fedstale.simulation.local_grid import run_in_process  # noqa: E402
from fedstale.strategies import MemoryRecorder  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """One compared setting: a label, a shipped config and overrides."""

    label: str
    config: str
    overrides: dict[str, Any] = field(default_factory=dict)


VARIANTS = (
    Variant("dense", "configs/default.yaml"),
    Variant("top-10% EF", "configs/compression.yaml"),
    Variant("top-10% EF int8", "configs/compression.yaml", {"compression.quantize": "int8"}),
    Variant("top-1% EF", "configs/compression.yaml", {"compression.ratio": 0.01}),
)


@dataclass
class Outcome:
    """What one (variant, seed) run gave at the target (or at its stop)."""

    reached: bool
    bytes_up: int
    updates: int
    virtual_time: float
    accuracy: float
    compression_ratio: float
    wall: float


def run_once(config: Config, target: float) -> Outcome:
    """Run one experiment in process until the target or its version budget."""
    recorder = MemoryRecorder()
    started = time.perf_counter()
    run_in_process(config, recorder, num_nodes=config.data.num_clients, seed=config.run.seed)
    wall = time.perf_counter() - started
    rows = [r for r in recorder.evaluations if r.get("accuracy") not in (None, "")]
    if not rows:
        raise RuntimeError("the run recorded no evaluation with an accuracy")
    hit = next((r for r in rows if float(r["accuracy"]) >= target), None)
    row = rows[-1] if hit is None else hit
    ratio = row["compression_ratio"]
    return Outcome(
        reached=hit is not None,
        bytes_up=int(row["bytes_up"]),
        updates=int(row["updates"]),
        virtual_time=float(row["virtual_time"]),
        accuracy=max(float(r["accuracy"]) for r in rows) if hit is None else float(hit["accuracy"]),
        compression_ratio=float(ratio) if ratio != "" else 1.0,
        wall=wall,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=(
            "Bytes uploaded until a target test accuracy, dense vs top-k/int8 compressed "
            "updates with error feedback, on the default experiment (in-process, "
            "deterministic). The last lines are the dense/compressed ratios."
        )
    )
    parser.add_argument("--target", type=float, default=0.90,
                        help="target test accuracy in (0, 1] (default: 0.90)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="number of seeds, run.seed = 0..seeds-1 (default: 3)")
    parser.add_argument("--max-versions", type=int, default=300,
                        help="budget in FedBuff buffer flushes (default: 300 = 1500 updates)")
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error("--target must be in (0, 1]")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.max_versions < 1:
        parser.error("--max-versions must be >= 1")
    logging.getLogger("flwr").setLevel(logging.WARNING)

    print(f"target accuracy {args.target:g}, seeds 0..{args.seeds - 1}, budget "
          f"{args.max_versions} versions; default experiment (FedBuff C=10 K=5, 20 digits clients)")
    outcomes: dict[str, list[Outcome]] = {v.label: [] for v in VARIANTS}
    started = time.perf_counter()
    for seed in range(args.seeds):
        for variant in VARIANTS:
            config = load_config(REPO / variant.config, {
                **variant.overrides,
                "run.seed": seed,
                "stop.num_updates": args.max_versions,
                "stop.target_accuracy": args.target,
                "evaluation.every": 1,
            })
            o = run_once(config, args.target)
            outcomes[variant.label].append(o)
            print(f"  seed {seed} {variant.label:<16} {'reached' if o.reached else 'NOT reached'} "
                  f"acc={o.accuracy:.4f} after {o.updates} updates, {o.bytes_up:,} bytes up, "
                  f"t={o.virtual_time:.1f}s virtual ({o.wall:.1f}s wall)", flush=True)

    print()
    print(f"{'variant':<16} {'bytes up to target':>19} {'updates':>8} {'virtual s':>10} "
          f"{'bytes/update ratio':>19} {'reached':>8}")
    means = {}
    for label, runs in outcomes.items():
        means[label] = statistics.fmean(o.bytes_up for o in runs)
        bound = "" if all(o.reached for o in runs) else ">="
        print(f"{label:<16} {bound + format(means[label], ',.0f'):>19} "
              f"{statistics.fmean(o.updates for o in runs):>8.1f} "
              f"{statistics.fmean(o.virtual_time for o in runs):>10.1f} "
              f"{statistics.fmean(o.compression_ratio for o in runs):>19.2f} "
              f"{str(sum(o.reached for o in runs)) + '/' + str(len(runs)):>8}")
    print(f"(benchmark wall time {time.perf_counter() - started:.1f}s)")
    dense = means["dense"]
    for label in list(outcomes)[1:]:
        print(f"bytes uploaded to {args.target * 100:g}% accuracy, dense / {label}: "
              f"{dense / means[label]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
