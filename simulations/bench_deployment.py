"""Deployment speed: flower-superexec and fedstale superexec side by side.

What is measured
----------------
The same asynchronous run (FedAsync by default) on a real Flower 1.41
deployment on this machine, once per SuperExec: a ``flower-superlink`` and
``--nodes`` ``flower-supernode --isolation process`` processes on 127.0.0.1
(:class:`fedstale.deployment.LocalDeployment`, insecure, private
``FLWR_HOME``), each SuperNode with its SuperExec next to it, the run
submitted with ``flwr run . deploy --stream`` as a user would:

- **flower-superexec** (stock Flower): a new ``flwr-clientapp`` process per
  message, which imports torch and fedstale, loads its partition and warms
  torch up before it trains;
- **fedstale superexec** (:mod:`fedstale.superexec`): the same flags, every
  task served by one warm worker process per SuperNode.

Same model, nodes, clients, updates and run config; only the SuperExec
differs. For each run, from its ``clients.csv`` (one row per merged update,
wall clock), per update per SuperNode in steady state (the time between
consecutive arrivals of one node's updates, each node's first update
excluded):

- **total**: seconds per update per node (its inverse: updates/s per node);
- **fit**: the client's ``fit_seconds`` (in a fresh ``flwr-clientapp``
  process this includes loading the partition and torch's warm-up);
- **rest** = total − fit: process start and imports (stock only), the
  SuperNode's and SuperExec's polling, message transfer, the merge;
- mean and max **staleness** τ of the merged updates.

For ``fedstale superexec`` it also prints where the rest goes, from the
SuperExec's task log (``--task-log``, one JSON line per task): the time
between two tasks (the SuperNode polls for the reply every 0.5 s, sends it
to the SuperLink, pulls the next message and creates its task), pulling the
task input and the message's objects, the ClientApp beyond ``fit``,
pushing the reply and the Context.

Both SuperExecs run ``comm.max_inflight_per_node = --inflight`` (default 2)
with ``data.num_clients = strategy.concurrency = nodes × inflight`` (client
``c`` on node ``c mod nodes``), so each SuperNode's next TRAIN message is
already queued at the SuperLink and the SuperNode never falls into its 3 s
empty-pull sleep (``flwr/supernode/start_client_internal.py``). The price is
staleness: up to ``nodes × inflight − 1`` updates overtake each one. A third
run, ``fedstale superexec`` with one message per node (``--inflight 1``
semantics, one client per node), shows both sides of that trade (skip it
with ``--no-reference``). ``--poll`` sets Flower's
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` for every ``flower-superexec`` (the
SuperLink's too, in both runs); ``fedstale superexec`` polls every 50 ms
while tasks come in.

Targets (issue 14): the rest ≤ 1.0 s per update per node with ``fedstale
superexec`` for models up to 100K parameters (``--models cnn,resnet8``:
38,282 and 75,002 parameters on digits), and ≥ 8x faster per update than
``flower-superexec`` with the default experiment's CNN (``cnn``). The last
line is the speed-up for the first model.

Run from the repository root (about 6 min on 2 idle cores with the
defaults, several times that under load)::

    python simulations/bench_deployment.py [--nodes 2] [--updates 12] [--models cnn,resnet8]

Every process started (SuperLink, SuperNodes, SuperExecs, their workers,
ServerApp and ClientApp processes) is stopped by PID at the end of each
run, also on error or Ctrl-C; the script checks that none is left.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedstale.deployment import LocalDeployment  # noqa: E402

REST_TARGET = 1.0  # s per update per node, fedstale superexec, models <= 100K parameters
SPEEDUP_TARGET = 8.0  # x, default experiment's CNN
POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
LABELS = {"flower": "flower-superexec", "fedstale": "fedstale superexec"}
PARAMETERS = re.compile(r"(\w+) model \((\d+) parameters\)")
PARTS = (
    ("idle_before", "between tasks (SuperNode: reply polled every 0.5 s, sent to the SuperLink, "
     "next message pulled, task created; SuperExec poll)"),
    ("pull_input", "PullTaskInput (Context, run, FAB)"),
    ("pull_message", "message and its objects (the SuperNode fetches them from the SuperLink meanwhile)"),
    ("app_extra", "ClientApp beyond fit (mods, bridge, arrays in and out)"),
    ("push_reply", "reply and its objects pushed"),
    ("push_output", "PushTaskOutput (Context)"),
    ("other", "SuperExec and worker bookkeeping"),
)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="SuperNodes (default 2)")
    parser.add_argument("--updates", type=int, default=12, help="client updates per run (default 12)")
    parser.add_argument("--inflight", type=int, default=2, help="comm.max_inflight_per_node (default 2)")
    parser.add_argument("--poll", type=float, default=0.05,
                        help=f"{POLL_ENV} for every flower-superexec (default 0.05)")
    parser.add_argument("--models", default="cnn,resnet8",
                        help="model.name of each pair of runs, comma-separated; the speed-up target is "
                        "about the first (default cnn,resnet8)")
    parser.add_argument("--config", default="configs/fedasync.yaml", help="base config (default FedAsync)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the fedstale superexec run with one message per node")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is abandoned")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="keep each run's folder (results, logs, task logs) under DIR")
    return parser.parse_args()


@dataclass
class Result:
    """One measured run."""

    model: str
    superexec: str
    inflight: int
    seconds: float
    rows: list[dict[str, str]]
    load: tuple[float, float]
    parameters: int | None = None
    tasks: list[dict] = field(default_factory=list)

    @property
    def intervals(self) -> list[float]:
        return [x for xs in steady_intervals(self.rows).values() for x in xs]

    @property
    def total(self) -> float:
        return statistics.fmean(self.intervals) if self.intervals else float("nan")

    @property
    def fit(self) -> float:
        fits = steady_fit(self.rows)
        return statistics.fmean(fits) if fits else float("nan")

    @property
    def rest(self) -> float:
        return self.total - self.fit

    @property
    def staleness(self) -> tuple[float, int]:
        stale = [int(r["staleness"]) for r in self.rows if r["accepted"] == "True"]
        return statistics.fmean(stale), max(stale)


def run_config(model: str, inflight: int, args: argparse.Namespace, output_dir: Path) -> dict[str, object]:
    """The ``--run-config`` of a measured run."""
    clients = args.nodes * inflight
    return {
        "config": args.config,
        "model.name": model,
        "delay.clock": "wall",
        "data.num_clients": clients,
        "strategy.concurrency": clients,
        "comm.max_inflight_per_node": inflight,
        "stop.num_updates": args.updates,
        "evaluation.every": args.updates,
        "output.checkpoint_every": 0,
        "output.plots": False,
        "run.output_dir": str(output_dir),
    }


def read_rows(output_dir: Path) -> list[dict[str, str]]:
    """The rows of the run's ``clients.csv``."""
    found = sorted(output_dir.glob("*/clients.csv"))
    if not found:
        raise SystemExit(f"no clients.csv under {output_dir}")
    with found[0].open(newline="") as handle:
        return list(csv.DictReader(handle))


def steady_intervals(rows: list[dict[str, str]]) -> dict[str, list[float]]:
    """Per node, wall seconds between consecutive arrivals, first arrival excluded."""
    arrivals: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        arrivals[row["node"]].append(float(row["arrival_time"]))
    return {
        node: [b - a for a, b in zip(sorted(times), sorted(times)[1:])]
        for node, times in arrivals.items()
    }


def steady_fit(rows: list[dict[str, str]]) -> list[float]:
    """``fit_seconds`` of every update but each node's first."""
    seen: set[str] = set()
    fits = []
    for row in sorted(rows, key=lambda r: float(r["arrival_time"])):
        if row["node"] in seen and row["fit_seconds"]:
            fits.append(float(row["fit_seconds"]))
        seen.add(row["node"])
    return fits


def measure(model: str, superexec: str, inflight: int, args: argparse.Namespace) -> Result:
    """Start a deployment with ``superexec``, run once, stop everything; the result."""
    with tempfile.TemporaryDirectory(prefix="bench-deployment-") as scratch:
        tmp = scratch
        if args.keep:
            tmp = str(Path(args.keep).resolve() / f"{model}-{superexec}-inflight{inflight}")
            Path(tmp).mkdir(parents=True, exist_ok=False)
        dep = LocalDeployment(tmp, superexec=superexec)
        dep.env[POLL_ENV] = str(args.poll)
        load_before = os.getloadavg()[0]
        try:
            dep.start_superlink()
            for partition in range(args.nodes):
                dep.start_supernode(partition, args.nodes)
            dep.wait_for_supernodes(args.nodes)
            output_dir = Path(tmp) / "results"
            started = time.monotonic()
            proc = dep.run(ROOT, run_config(model, inflight, args, output_dir), timeout=args.timeout, check=True)
            seconds = time.monotonic() - started
            rows = read_rows(output_dir)
            tasks = [t for p in range(args.nodes) for t in dep.superexec_tasks(f"supernode-{p}")]
        finally:
            dep.stop()
            left = dep.processes()
            if left:
                print(f"WARNING: processes left behind: {left}", file=sys.stderr)
    found = PARAMETERS.search(proc.stdout)
    result = Result(model, superexec, inflight, seconds, rows, (load_before, os.getloadavg()[0]),
                    int(found.group(2)) if found else None, tasks)
    print(f"  done: {LABELS[superexec]}, {model}, inflight {inflight}: {seconds:.0f} s end to end, "
          f"{result.total:.2f} s per update per node", flush=True)
    return result


def breakdown(result: Result) -> dict[str, float]:
    """Mean seconds per steady-state TRAIN task of each part of the rest (from the task log).

    Each worker's first TRAIN task is left out (as each node's first update
    is in the rows). ``fit_seconds`` is not in the task log, so the ClientApp
    beyond fit is the mean ClientApp time minus the run's mean steady fit.
    """
    trains = sorted((t for t in result.tasks if t["message_type"] == "train" and t["status"] == "completed"),
                    key=lambda t: t["acquired_at"])
    seen: set[int] = set()
    parts: dict[str, list[float]] = defaultdict(list)
    for task in trains:
        if task["worker_pid"] not in seen:
            seen.add(task["worker_pid"])
            continue
        timings = task["timings"]
        parts["idle_before"].append(task["idle_before"])
        for key in ("pull_input", "pull_message", "push_reply", "push_output"):
            parts[key].append(timings.get(key, 0.0))
        parts["app_extra"].append(timings.get("client_app", 0.0) - result.fit)
        parts["other"].append(task["seconds"] - sum(timings.values()))
    return {key: statistics.fmean(values) for key, values in parts.items() if values}


def report(results: list[Result], args: argparse.Namespace) -> None:
    """The table, the breakdown, the verdicts; the last line is the speed-up."""
    print()
    print(f"{args.nodes} SuperNodes on loopback, {args.updates} updates per run, "
          f"{POLL_ENV}={args.poll} for flower-superexec; CPUs: {os.cpu_count()}")
    header = (f"{'model':<14} {'SuperExec':<19} {'inflight':>8} {'total':>7} {'fit':>6} {'rest':>6} "
              f"{'tau mean (max)':>15} {'end to end':>10} {'load':>11}")
    print("seconds per update per node (steady state):")
    print(header)
    for r in results:
        mean_tau, max_tau = r.staleness
        name = f"{r.model}" + (f" ({r.parameters // 1000}K)" if r.parameters else "")
        print(f"{name:<14} {LABELS[r.superexec]:<19} {r.inflight:>8} {r.total:>7.2f} {r.fit:>6.2f} {r.rest:>6.2f} "
              f"{mean_tau:>9.2f} ({max_tau}) {r.seconds:>9.0f}s {r.load[0]:>5.1f}-{r.load[1]:<5.1f}")
    for r in results:
        if r.superexec != "fedstale" or r.inflight != args.inflight:
            continue
        parts = breakdown(r)
        if parts:
            print(f"where the rest goes, fedstale superexec, {r.model} (mean s per steady TRAIN task):")
            for key, text in PARTS:
                if key in parts:
                    print(f"  {parts[key]:6.3f}  {text}")
    pairs = {}
    for r in results:
        pairs.setdefault(r.model, {})[(r.superexec, r.inflight)] = r
    reference = [r for r in results if r.superexec == "fedstale" and r.inflight != args.inflight]
    for ref in reference:
        main = pairs[ref.model].get(("fedstale", args.inflight))
        if main is not None:
            print(f"pre-queuing ({args.inflight} tasks per node) vs 1 on fedstale superexec, {ref.model}: "
                  f"{main.total:.2f} vs {ref.total:.2f} s per update per node, mean staleness "
                  f"{main.staleness[0]:.2f} vs {ref.staleness[0]:.2f} (the 3 s empty-pull sleep it avoids, "
                  "the staleness it costs)")
    for model, pair in pairs.items():
        warm = pair.get(("fedstale", args.inflight))
        if warm is not None:
            size = f"{warm.parameters:,} parameters" if warm.parameters else "?"
            verdict = "met" if warm.rest <= REST_TARGET else "NOT met"
            print(f"target: rest <= {REST_TARGET:.1f} s per update per node, fedstale superexec, {model} "
                  f"({size}): {warm.rest:.2f} s, {verdict}")
    speedups = []
    for model, pair in pairs.items():
        stock, warm = pair.get(("flower", args.inflight)), pair.get(("fedstale", args.inflight))
        if stock is not None and warm is not None:
            speedups.append((model, stock.total / warm.total))
    for model, ratio in speedups:
        note = f" (target >= {SPEEDUP_TARGET:.0f}x: {'met' if ratio >= SPEEDUP_TARGET else 'NOT met'})" \
            if model == "cnn" else ""
        print(f"speed-up per update, {model}: {ratio:.1f}x{note}")
    if speedups:
        model, ratio = speedups[0]
        print(f"fedstale superexec: {ratio:.1f}x faster per update than flower-superexec")


def main() -> None:
    """Both SuperExecs per model (and the reference run), then the report."""
    args = parse_args()
    models = [m for m in args.models.split(",") if m]
    plan = []
    for index, model in enumerate(models):
        plan += [(model, "flower", args.inflight), (model, "fedstale", args.inflight)]
        if index == 0 and not args.no_reference and args.inflight != 1:
            plan.append((model, "fedstale", 1))
    print(f"{len(plan)} runs: " + ", ".join(f"{LABELS[s]} {m} inflight {i}" for m, s, i in plan), flush=True)
    results = [measure(model, superexec, inflight, args) for model, superexec, inflight in plan]
    report(results, args)


if __name__ == "__main__":
    main()
