"""Deployment speed: seconds per update per SuperNode on a real Flower federation.

What is measured
----------------
One asynchronous run (FedAsync by default) on a real Flower 1.41 deployment
on this machine: a ``flower-superlink`` and ``--nodes`` ``flower-supernode``
processes on 127.0.0.1 (:class:`fedstale.deployment.LocalDeployment`,
insecure, private ``FLWR_HOME``), the run submitted with
``flwr run . deploy --stream`` as a user would. From the run's
``clients.csv`` (one row per merged update, wall clock) it prints

- **round trip per update**: median and mean ``wall_duration`` (push of the
  TRAIN message to merge of its reply, as the ServerApp sees it; with more
  than one message queued per node this includes the wait in the queue);
- **fit_seconds**: median and mean of the client's own measure of its
  ``fit`` (partition loading on the first call in a process, torch warm-up,
  local training);
- **seconds per update per node** in steady state: for each SuperNode, the
  time between consecutive arrivals of its updates (``arrival_time``,
  wall seconds since the strategy started), the first update of each node
  excluded (it carries the start-up); its inverse is *updates per second
  per node*. This is the number the issue's target (≤ 2 s) is about;
- **mean staleness** τ of the merged updates;
- a **breakdown** of the steady-state interval: ``fit_seconds`` and the
  rest (SuperNode polling and sleeps, SuperExec polling, starting the
  ``flwr-clientapp`` process and importing torch/fedstale, message
  transfer, the ServerApp's merge).

How
---
- Data and model: the bundled ``digits`` dataset (offline), one client per
  partition, ``data.num_clients = nodes × inflight`` (client ``c`` lives on
  node ``c mod nodes``), ``strategy.concurrency`` the same, so every node
  holds ``inflight`` tasks; ``model.name=resnet8`` by default (75,002
  parameters on digits: the model closest to 100K parameters that runs
  offline; ``cnn`` has 38,282). ``delay.clock=wall`` (replies merged in
  arrival order), no federated evaluation beyond the centralized one every
  ``--updates`` updates, no checkpoints or plots.
- ``--inflight`` sets ``comm.max_inflight_per_node``. With 1, a node's next
  TRAIN message is only pushed after its reply was merged, so the node's
  next pull finds nothing and Flower's SuperNode sleeps a hard-coded 3 s
  (``flwr/supernode/start_client_internal.py``). With 2, the next message
  is already queued at the SuperLink: the SuperNode (which processes one
  message at a time: it blocks until the reply is ready, pushes it, then
  pulls again) picks it up at once. The price is staleness: each update is
  computed on a model that ``nodes × inflight − 1`` other updates may
  overtake.
- ``--poll`` sets ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (Flower's own
  environment variable, default 1 s, minimum 0.01 s) in the environment of
  every process of the deployment: the SuperNodes' SuperExecs (and the
  SuperLink's, for the ServerApp) inherit it and look for new tasks that
  often.
- Every process started (SuperLink, SuperNodes, their SuperExecs,
  ServerApp and ClientApp processes) is stopped by PID at the end
  (:meth:`LocalDeployment.stop`), also on error or Ctrl-C; the script
  checks that none is left.

Run from the repository root (about 3 min on 2 shared cores with the
defaults; 12 updates took 306 s at load 1-9)::

    python simulations/bench_deployment.py [--nodes 2] [--updates 8] [--inflight 1|2] [--poll 0.05] [--model cnn]

Results go to a temporary folder that is deleted; the last line is the
steady-state seconds per update per node against the 2 s target.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedstale.deployment import LocalDeployment  # noqa: E402

TARGET_SECONDS = 2.0
POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="SuperNodes (default 2)")
    parser.add_argument("--updates", type=int, default=8, help="client updates in the run (default 8)")
    parser.add_argument("--inflight", type=int, default=1, help="comm.max_inflight_per_node (default 1)")
    parser.add_argument("--poll", type=float, default=None,
                        help=f"{POLL_ENV} for every SuperExec (default: Flower's 1 s)")
    parser.add_argument("--model", default="resnet8", help="model.name (default resnet8, 75K parameters)")
    parser.add_argument("--config", default="configs/fedasync.yaml", help="base config (default FedAsync)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before the run is abandoned")
    return parser.parse_args()


def run_config(args: argparse.Namespace, output_dir: Path) -> dict[str, object]:
    """The ``--run-config`` of the measured run."""
    clients = args.nodes * args.inflight
    return {
        "config": args.config,
        "model.name": args.model,
        "delay.clock": "wall",
        "data.num_clients": clients,
        "strategy.concurrency": clients,
        "comm.max_inflight_per_node": args.inflight,
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


def report(rows: list[dict[str, str]], args: argparse.Namespace, seconds: float) -> None:
    """Print the measured numbers; the last line is the headline."""
    walls = [float(r["wall_duration"]) for r in rows]
    fits_all = [float(r["fit_seconds"]) for r in rows if r["fit_seconds"]]
    stale = [int(r["staleness"]) for r in rows]
    intervals = steady_intervals(rows)
    pooled = [x for xs in intervals.values() for x in xs]
    fits = steady_fit(rows)
    print(f"model={args.model} nodes={args.nodes} inflight/node={args.inflight} "
          f"{POLL_ENV}={args.poll if args.poll is not None else 'default (1 s)'} "
          f"updates={len(rows)} end to end {seconds:.1f} s")
    print(f"round trip (wall_duration): median {statistics.median(walls):.2f} s, "
          f"mean {statistics.fmean(walls):.2f} s, min {min(walls):.2f}, max {max(walls):.2f}")
    print(f"fit_seconds (all updates): median {statistics.median(fits_all):.2f} s, "
          f"mean {statistics.fmean(fits_all):.2f} s")
    print(f"mean staleness: {statistics.fmean(stale):.2f} (max {max(stale)})")
    for node, xs in sorted(intervals.items()):
        if xs:
            print(f"  node {node}: {len(xs) + 1} updates, steady intervals "
                  + " ".join(f"{x:.2f}" for x in xs))
    if not pooled:
        print("no steady-state interval (each node sent one update): raise --updates")
        return
    per_update = statistics.fmean(pooled)
    fit = statistics.fmean(fits) if fits else float("nan")
    print(f"steady state: {per_update:.2f} s per update per node (median {statistics.median(pooled):.2f}), "
          f"{1.0 / per_update:.3f} updates/s per node")
    print(f"breakdown of the steady-state interval: fit_seconds {fit:.2f} s, rest {per_update - fit:.2f} s "
          "(SuperNode/SuperExec polling, ClientApp process start and imports, transfer, merge)")
    verdict = "met" if per_update <= TARGET_SECONDS else "NOT met"
    print(f"seconds per update per node: {per_update:.2f} (target <= {TARGET_SECONDS:.0f} s: {verdict})")


def main() -> None:
    """Start the deployment, run, report, stop everything."""
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deployment-") as tmp:
        dep = LocalDeployment(tmp)
        if args.poll is not None:
            dep.env[POLL_ENV] = str(args.poll)
        try:
            dep.start_superlink()
            for partition in range(args.nodes):
                dep.start_supernode(partition, args.nodes)
            dep.wait_for_supernodes(args.nodes)
            output_dir = Path(tmp) / "results"
            started = time.monotonic()
            dep.run(ROOT, run_config(args, output_dir), timeout=args.timeout, check=True)
            seconds = time.monotonic() - started
            rows = read_rows(output_dir)
        finally:
            dep.stop()
            left = dep.processes()
            if left:
                print(f"WARNING: processes left behind: {left}", file=sys.stderr)
    report(rows, args, seconds)


if __name__ == "__main__":
    main()
