"""Virtual time to a target accuracy: FedBuff vs FedAsync vs synchronous FedAvg.

What is measured
----------------
For each strategy and each seed, the *virtual* time (seconds on fedstale's
discrete-event clock) at which the global model first reaches the target test
accuracy (default 90 % on the held-out digits test set), and the number of
client updates received by then. The headline number is

    speedup = mean virtual time to target of sync FedAvg
              / mean virtual time to target of FedBuff

(ratio of the per-strategy means over the seeds; the per-seed ratios and
their geometric mean are printed too, because with heavy-tailed delays one
seed with a very slow client can dominate the mean). The FedBuff paper
(Nguyen et al., AISTATS 2022) reports 3.3x; the project's target is >= 3x.

How
---
- The experiments are the shipped configs, unchanged except for what is
  listed below: ``configs/default.yaml`` (FedBuff, C=10, K=5, eta_g=1),
  ``configs/fedasync.yaml`` (FedAsync, C=10, alpha=0.6, polynomial a=0.5) and
  ``configs/fedavg.yaml`` (sync FedAvg, 10 clients per round). They share the
  same ``data``, ``model``, ``client`` and ``delay`` sections (20 clients,
  Dirichlet(0.5) label skew, Pareto(1.2) per-example client speeds capped at
  0.5 s/example, lognormal jitter, latency and bandwidth); the script checks
  that these sections are identical and refuses to run otherwise.
- Overrides applied to every strategy: ``run.seed`` (0, 1, ..., seeds-1; it
  seeds the delays, client selection, initial weights and local training;
  ``data.seed`` stays 0, so the partitions are the same in every run),
  ``stop.num_updates`` (the version budget, below) and ``evaluation.every``
  (1 for FedAvg and FedBuff, 5 for FedAsync, whose versions are single
  updates) so that the first evaluation at or above target is at most a few
  client updates after the true crossing.
- No FedBuff hyperparameter is tuned: buffer_size, server_lr and concurrency
  are those of ``configs/default.yaml``.
- The runs use fedstale's own strategies and ClientApp on
  :class:`fedstale.simulation.local_grid.LocalGrid` (in-process, one node per
  client), not ``flwr run``: only virtual time matters here, and the virtual
  clock makes the result identical whatever the transport or the number of
  workers (deterministic for a seed). Each run stops at the target accuracy
  (``start(target_accuracy=...)``) or at the budget.
- Time to target is the ``virtual_time`` of the first evaluation row whose
  ``accuracy`` >= target; rows are captured with
  :class:`fedstale.strategies.MemoryRecorder`.
- Budget: ``--max-versions`` is the number of sync FedAvg rounds (default
  200, i.e. 2000 client updates at 10 clients per round); the asynchronous
  strategies get the same number of client updates (FedBuff:
  max_versions*C/K buffer flushes, FedAsync: max_versions*C merges). A seed
  that does not reach the target within the budget is reported as such and
  its time counts as the virtual time at which it stopped (so the mean is a
  lower bound, marked ``>=``).

Run from the repository root (about 2.5 min on 2 idle cores with 10 seeds, ~15 s per seed)::

    python simulations/bench_time_to_accuracy.py [--target 0.9] [--seeds 10]

Nothing is written to disk; the last line of the output is the FedBuff vs
sync FedAvg speedup.
"""

from __future__ import annotations

import argparse
import logging
import math
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
from fedstale.config import Config, load_config, to_dict  # noqa: E402
from fedstale.simulation.local_grid import run_in_process  # noqa: E402
from fedstale.strategies import MemoryRecorder  # noqa: E402


@dataclass(frozen=True)
class StrategySetup:
    """One compared strategy: its label, shipped config and evaluation period."""

    label: str
    config: str
    eval_every: int


STRATEGIES = (
    StrategySetup("FedBuff", "configs/default.yaml", 1),
    StrategySetup("FedAsync", "configs/fedasync.yaml", 5),
    StrategySetup("sync FedAvg", "configs/fedavg.yaml", 1),
)
SHARED_SECTIONS = ("data", "model", "client", "delay")
"""Sections that must be identical across the compared configs."""


@dataclass
class Outcome:
    """What one (strategy, seed) run gave."""

    reached: bool
    virtual_time: float
    """Virtual seconds to the target (or at the stop, if not reached)."""
    updates: int
    """Client updates received by then."""
    version: int
    accuracy: float
    """Accuracy at that row (the first >= target, or the best seen)."""
    wall: float


@dataclass
class Summary:
    """One strategy over all seeds."""

    setup: StrategySetup
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def all_reached(self) -> bool:
        return all(o.reached for o in self.outcomes)

    @property
    def mean_time(self) -> float:
        return statistics.fmean(o.virtual_time for o in self.outcomes)

    @property
    def mean_updates(self) -> float:
        return statistics.fmean(o.updates for o in self.outcomes)


def version_budget(setup: StrategySetup, config: Config, max_versions: int, per_round: int) -> int:
    """Versions giving ``max_versions * per_round`` client updates to ``setup``."""
    updates = max_versions * per_round
    name = config.strategy.name
    if name == "fedavg":
        return max(1, updates // config.strategy.concurrency)
    if name in ("fedbuff", "dynamic"):
        return max(1, math.ceil(updates / config.strategy.buffer_size))
    return updates  # fedasync: one version per update


def load(setup: StrategySetup, overrides: dict[str, Any]) -> Config:
    """The shipped config of ``setup`` with ``overrides``."""
    return load_config(REPO / setup.config, overrides)


def check_same_setting(configs: dict[str, Config]) -> None:
    """Refuse to compare configs whose data, model, client or delays differ."""
    items = list(configs.items())
    label0, first = items[0]
    for label, config in items[1:]:
        for section in SHARED_SECTIONS:
            a, b = to_dict(first)[section], to_dict(config)[section]
            if a != b:
                raise SystemExit(
                    f"error: the '{section}' sections of {label0} and {label} differ; "
                    f"the comparison would not be like for like:\n  {a}\n  {b}"
                )


def describe_delays(config: Config) -> str:
    """The ``delay`` section in one line."""
    delay = config.delay
    speed = {k: v for k, v in to_dict(config)["delay"]["speed"].items()
             if k != "distribution" and v is not None}
    params = ", ".join(f"{k} {v:g}" for k, v in speed.items())
    return (
        f"{delay.clock} clock, {delay.speed.distribution}({params}) s/example per client, "
        f"jitter {delay.jitter:g}, latency {delay.latency:g} s, bandwidth {delay.bandwidth:g} B/s"
    )


def run_once(config: Config, target: float) -> Outcome:
    """Run one experiment in process until the target or its version budget."""
    recorder = MemoryRecorder()
    started = time.perf_counter()
    run_in_process(config, recorder, num_nodes=config.data.num_clients, seed=config.run.seed)
    wall = time.perf_counter() - started
    rows = [r for r in recorder.evaluations if r.get("accuracy") not in (None, "")]
    if not rows:
        raise RuntimeError("the run recorded no evaluation with an accuracy")
    for row in rows:
        if float(row["accuracy"]) >= target:
            return Outcome(True, float(row["virtual_time"]), int(row["updates"]),
                           int(row["version"]), float(row["accuracy"]), wall)
    last = rows[-1]
    best = max(float(r["accuracy"]) for r in rows)
    return Outcome(False, float(last["virtual_time"]), int(last["updates"]),
                   int(last["version"]), best, wall)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=(
            "Virtual time to a target test accuracy for FedBuff, FedAsync and sync "
            "FedAvg on identical heavy-tailed client delays (in-process LocalGrid, "
            "deterministic). Prints a table; the last line is the FedBuff vs sync "
            "FedAvg speedup."
        )
    )
    parser.add_argument("--target", type=float, default=0.90,
                        help="target test accuracy in (0, 1] (default: 0.90)")
    parser.add_argument("--seeds", type=int, default=10,
                        help="number of seeds, run.seed = 0..seeds-1 (default: 10)")
    parser.add_argument("--max-versions", type=int, default=200,
                        help="budget in sync FedAvg rounds; the async strategies get the same "
                        "number of client updates (default: 200 = 2000 updates)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the table and the ratios (no per-run lines)")
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error("--target must be in (0, 1]")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.max_versions < 1:
        parser.error("--max-versions must be >= 1")

    # fedstale logs every evaluation through Flower's logger; keep warnings only.
    logging.getLogger("flwr").setLevel(logging.WARNING)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    bases = {s.label: load(s, {}) for s in STRATEGIES}
    check_same_setting(bases)
    per_round = bases["sync FedAvg"].strategy.concurrency
    summaries = {s.label: Summary(s) for s in STRATEGIES}
    say(
        f"target accuracy {args.target:g}, seeds 0..{args.seeds - 1}, budget "
        f"{args.max_versions * per_round} client updates per run; "
        f"{bases['FedBuff'].data.num_clients} clients; delays: {describe_delays(bases['FedBuff'])}"
    )
    started = time.perf_counter()
    for seed in range(args.seeds):
        for setup in STRATEGIES:
            budget = version_budget(setup, bases[setup.label], args.max_versions, per_round)
            config = load(setup, {
                "run.seed": seed,
                "stop.num_updates": budget,
                "stop.target_accuracy": args.target,
                "evaluation.every": setup.eval_every,
            })
            outcome = run_once(config, args.target)
            summaries[setup.label].outcomes.append(outcome)
            say(
                f"  seed {seed} {setup.label:<12} "
                f"{'reached' if outcome.reached else 'NOT reached'} "
                f"acc={outcome.accuracy:.4f} at v={outcome.version} "
                f"t={outcome.virtual_time:.1f}s virtual, {outcome.updates} updates "
                f"({outcome.wall:.1f}s wall; C={config.strategy.concurrency}"
                + (f", K={config.strategy.buffer_size}" if setup.label == "FedBuff" else "")
                + ")"
            )

    per_seed = {
        label: ", ".join(
            f"{o.virtual_time:.1f}" + ("" if o.reached else "*") for o in summary.outcomes
        )
        for label, summary in summaries.items()
    }
    print()
    print(f"{'strategy':<12} {'mean virtual s':>15} {'mean updates':>12} "
          f"{'all seeds reached':>18}  per seed (s)")
    for label, summary in summaries.items():
        bound = "" if summary.all_reached else ">="
        reached = sum(o.reached for o in summary.outcomes)
        print(
            f"{label:<12} {bound + format(summary.mean_time, '.1f'):>15} "
            f"{summary.mean_updates:>12.1f} "
            f"{('yes' if summary.all_reached else 'no') + f' ({reached}/{args.seeds})':>18}  "
            f"{per_seed[label]}"
        )
    if not all(s.all_reached for s in summaries.values()):
        print("* target not reached within the budget: the time shown is where the run "
              "stopped, so that mean is a lower bound and ratios involving it are bounds")
    print(f"(benchmark wall time {time.perf_counter() - started:.1f}s)")

    avg, buff, asyn = (summaries[k] for k in ("sync FedAvg", "FedBuff", "FedAsync"))
    percent = f"{args.target * 100:g}%"

    def ratio(slow: float, fast: float) -> float:
        if fast > 0:
            return slow / fast
        return 1.0 if slow <= 0 else math.inf

    def per_seed_ratios(fast: Summary) -> list[float]:
        return [ratio(a.virtual_time, f.virtual_time) for a, f in zip(avg.outcomes, fast.outcomes)]

    for label, fast in (("FedBuff", buff), ("FedAsync", asyn)):
        ratios = per_seed_ratios(fast)
        finite = all(0 < r < math.inf for r in ratios)
        geo = math.exp(statistics.fmean(math.log(r) for r in ratios)) if finite else math.inf
        print(
            f"per-seed speedups {label} vs sync FedAvg: "
            + ", ".join(f"{r:.2f}x" for r in ratios)
            + f" (geometric mean {geo:.2f}x)"
        )
    print(f"speedup FedBuff vs FedAsync (virtual time to {percent} accuracy): "
          f"{ratio(asyn.mean_time, buff.mean_time):.2f}x")
    print(f"speedup FedAsync vs sync FedAvg (virtual time to {percent} accuracy): "
          f"{ratio(avg.mean_time, asyn.mean_time):.2f}x")
    print(f"speedup FedBuff vs sync FedAvg (virtual time to {percent} accuracy): "
          f"{ratio(avg.mean_time, buff.mean_time):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
