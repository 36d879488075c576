"""The cost of Flower's transport: one experiment through ``flwr run`` and in process.

What is measured
----------------
The same experiment (``configs/default.yaml`` unless ``--config``: FedBuff,
20 clients, C = 10, 200 versions on the virtual clock) run twice, one after
the other:

- **flwr run**: ``flwr run`` of the app at the repository root on Flower's
  default simulation federation (2 SuperNodes, Flower's default client
  resources), in a fresh private ``FLWR_HOME``
  (:class:`fedstale.simulation.launcher.LocalFederation`, every process it
  started stopped by PID at the end);
- **in process**: the same config on :class:`fedstale.simulation.LocalGrid`
  (no SuperLink, no Ray; the ClientApp runs in this process).

For each it prints the **strategy loop** (``wall_time`` of the last row of
``metrics.csv``: from the clock's start, after the start-up queries, to the
last merge), the **summed client compute** (``fit_seconds`` of every row of
``clients.csv``) and the **evaluation** seconds (the loop's centralized
evaluations, from its ``transport:`` log line), and how many training tasks
went out in how many messages. The rows (every column but the wall-time
ones) must be identical between the two; the script exits with 1 if not.

Targets: flwr-run loop / in-process loop <= 1.3 (the last line), and the
flwr-run loop <= 1.5 x its own summed fit + evaluation seconds.

Start-up. From the ``[LOG] start-up:`` lines of the run (Unix times the
ServerApp logs) it splits the time from the ``flwr run`` command to the
first TRAIN message into: Flower starting the SuperLink and the simulation
until the ServerApp module starts to load; fedstale's ServerApp import
(fedstale, torch); fedstale building the experiment (config, test set,
model); the start-up queries (waiting for Flower's Ray workers, the
ClientApps loading, and fedstale's ClientApps preparing their clients'
partitions, which they report). fedstale's share is the import, the build
and the ClientApps' preparing.

The floor. Flower's engine takes one message per SuperNode per scan, a scan
every 0.1 s, and the virtual clock cannot merge a reply before every task
that finishes earlier is back, so a run needs some number of scans however
many tasks a message carries. The script counts them in process, on a grid
that runs every waiting message at each pull (one scan, unlimited tasks per
message), and prints scans x 0.1 s: the least the flwr-run loop can take on
2 SuperNodes. It also estimates, from the in-process ``clients.csv`` rows,
the scans a loop would need that dispatched tasks ahead of every reply that
makes no new model version (speculatively, undoing its dispatches when a
reply fails): :func:`speculative_scans`, for deciding whether such a loop is
worth building.

Machine load (``os.getloadavg``) is printed before and after: these 2-core
machines are shared, and the ratio moves with the load.

Run from the repository root (about 2 minutes)::

    python simulations/bench_transport.py [--config configs/default.yaml] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from fedstale.config import load_config  # noqa: E402
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS, WALL_COLUMNS, read_csv  # noqa: E402
from fedstale.simulation.launcher import LocalFederation, raise_if_failed, run_folder  # noqa: E402
from fedstale.simulation.local_grid import LocalGrid, run_in_process  # noqa: E402
from fedstale.strategies import MemoryRecorder  # noqa: E402

IMPORTED = re.compile(r"start-up: ServerApp imported in ([\d.]+)s, main\(\) entered at Unix time ([\d.]+)")
QUERIED = re.compile(
    r"start-up: SuperNodes found, described and prepared in ([\d.]+)s from Unix time ([\d.]+) "
    r"\(ClientApps preparing: ([\d.]+)s at most\)"
)
TRANSPORT = re.compile(
    r"transport: (\d+) training tasks in (\d+) messages, the first at Unix time ([\d.]+); "
    r"evaluation: ([\d.]+)s"
)


def say(text: str = "") -> None:
    """Print one line now."""
    print(text, flush=True)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def _text(value: Any) -> str:
    """A cell as ``metrics.csv`` writes it."""
    if isinstance(value, float):
        return f"{value:.10g}"
    return "" if value is None else str(value)


def reproducible(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[list[str]]:
    """The rows' cells outside the wall-time columns, as text."""
    kept = [c for c in columns if c not in WALL_COLUMNS]
    return [[_text(row.get(c, "")) for c in kept] for row in rows]


def match(pattern: re.Pattern[str], text: str) -> tuple[float, ...]:
    """The numbers of the last line of ``text`` matching ``pattern``."""
    found = pattern.findall(text)
    if not found:
        raise RuntimeError(f"no log line matches {pattern.pattern!r}")
    return tuple(float(x) for x in found[-1])


def in_process(config_path: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The experiment on the in-process LocalGrid."""
    recorder = MemoryRecorder()
    started = time.perf_counter()
    _, strategy = run_in_process(load_config(config_path, overrides), recorder)
    whole = time.perf_counter() - started
    return {
        "whole": whole,
        "loop": float(recorder.evaluations[-1]["wall_time"]),
        "fit": sum(float(r["fit_seconds"] or 0.0) for r in recorder.updates),
        "evaluation": strategy.evaluator.seconds,
        "tasks": strategy.transport.tasks_pushed,
        "messages": strategy.transport.messages_pushed,
        "metrics": reproducible(recorder.evaluations, METRICS_COLUMNS),
        "clients": reproducible(recorder.updates, CLIENT_COLUMNS),
        "speculative_scans": speculative_scans(recorder.updates),
    }


class ScanGrid(LocalGrid):
    """Runs every waiting message at each pull, as one scan of Flower's engine; counts the scans."""

    scans = 0

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        """One scan: execute everything pending, return the replies asked for."""
        if self._pending:
            self.scans += 1
            while self._pending:
                self._execute(self._pending.pop(0))
        wanted = set(message_ids)
        return [self._replies.pop(i) for i in list(self._replies) if i in wanted]


def scans_needed(config_path: Path, overrides: dict[str, Any], nodes: int) -> int:
    """Engine scans the experiment needs with unlimited tasks per message (in process)."""
    from fedstale.builders import build_strategy, run_strategy  # pylint: disable=import-outside-toplevel
    from fedstale.client_app import app  # pylint: disable=import-outside-toplevel

    config = load_config(config_path, {**overrides, "comm.tasks_per_message": 10**6})
    grid = ScanGrid(app, num_nodes=nodes)
    run_strategy(build_strategy(config), grid, config)
    return grid.scans


def speculative_scans(updates: list[dict[str, Any]]) -> int:
    """Scans a loop would need that dispatched tasks ahead of every reply that makes no new version.

    Today's loop dispatches a task only once every task that finishes
    earlier is merged. A loop that assumed each reply succeeds at its
    predicted finish (and undid its dispatches when one did not) would need a
    reply only for the model version it makes: task ``T`` could be pushed as
    soon as every update merged into versions up to ``T``'s base version is
    back. In scans, ``wave(T) = 1 + max(wave(U))`` over the accepted updates
    ``U`` with ``arrival_version(U) < dispatch_version(T)``; the result is
    the largest wave, an estimate from ``clients.csv`` rows (the count for
    today's loop comes from :func:`scans_needed`).
    """
    rows = [(int(r["dispatch_version"]), int(r["arrival_version"]), str(r["accepted"]) == "True")
            for r in updates]
    merged_into: dict[int, list[int]] = {}  # version v -> base versions of the updates that made it
    for dispatched, arrived, accepted in rows:
        if accepted:
            merged_into.setdefault(arrived + 1, []).append(dispatched)
    known = [0]  # known[v]: scans until version v's model can be computed
    for version in range(1, max(merged_into, default=0) + 1):
        known.append(max([known[-1], *(1 + known[base] for base in merged_into.get(version, []))]))
    return max((1 + known[min(base, len(known) - 1)] for base, _, _ in rows), default=0)


def through_flwr_run(
    work: Path, config_path: Path, overrides: dict[str, Any], federation_config: str | None,
    timeout: float,
) -> dict[str, Any]:
    """The experiment through ``flwr run`` in a fresh private federation."""
    out = work / "results"
    run_config = {"config": str(config_path), **overrides, "run.output_dir": str(out)}
    with LocalFederation(work) as fed:
        launched = time.time()
        started = time.perf_counter()
        proc = fed.run(REPO, run_config, federation_config=federation_config, timeout=timeout, cwd=work)
        whole = time.perf_counter() - started
        raise_if_failed(proc)
    leftover = fed.processes()
    log = proc.stdout + proc.stderr
    run_dir = run_folder(out, log)
    metrics, clients = read_csv(run_dir / "metrics.csv"), read_csv(run_dir / "clients.csv")
    imported, entered = match(IMPORTED, log)
    queried, queries_from, preparing = match(QUERIED, log)
    tasks, messages, first, evaluation = match(TRANSPORT, log)
    return {
        "whole": whole,
        "loop": float(metrics[-1]["wall_time"]),
        "fit": sum(float(r["fit_seconds"] or 0.0) for r in clients),
        "evaluation": evaluation,
        "tasks": int(tasks),
        "messages": int(messages),
        "metrics": reproducible(metrics, METRICS_COLUMNS),
        "clients": reproducible(clients, CLIENT_COLUMNS),
        "leftover": leftover,
        "start": {
            "to first TRAIN": first - launched,
            "Flower until the ServerApp loads": entered - imported - launched,
            "ServerApp import (fedstale, torch)": imported,
            "experiment built (config, test set, model)": queries_from - entered,
            "start-up queries": queried,
            "  of which ClientApps preparing partitions": preparing,
            "after the queries until the first push": first - queries_from - queried,
        },
        "fedstale_share": imported + (queries_from - entered) + preparing,
    }


def main(argv: list[str] | None = None) -> int:  # pylint: disable=too-many-locals
    """Entry point."""
    parser = argparse.ArgumentParser(
        description="One experiment through `flwr run` (Flower's default 2 SuperNodes) and in "
        "process; the last line is the ratio of their strategy loops."
    )
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml",
                        help="experiment (default configs/default.yaml)")
    parser.add_argument("--federation-config", default=None,
                        help="flwr run --federation-config (default none: Flower's defaults)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for both runs, e.g. comm.tasks_per_message=1")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for flwr run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"output.plots": False, "output.checkpoint_every": 0}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml_value(value)
    config_path = args.config.resolve()

    say(f"experiment: {config_path.relative_to(REPO) if config_path.is_relative_to(REPO) else config_path}"
        f" {' '.join(args.set)}; flwr run --federation-config {args.federation_config or '(Flower default)'}")
    say(f"before: {load()}")
    work = Path(tempfile.mkdtemp(prefix="fst-"))
    try:
        say("flwr run ...")
        flwr = through_flwr_run(work, config_path, overrides, args.federation_config, args.timeout)
        say(f"after flwr run: {load()}")
        say("in process ...")
        local = in_process(config_path, overrides)
        say(f"after in process: {load()}")
        say("scans needed ...")
        found = re.search(r"num-supernodes=(\d+)", args.federation_config or "")
        nodes = int(found[1]) if found else 2
        scans = scans_needed(config_path, overrides, nodes)
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    say()
    say("                          loop s   fit s  eval s  loop/(fit+eval)  tasks/messages  whole s")
    for name, run in (("flwr run", flwr), ("in process", local)):
        busy = run["fit"] + run["evaluation"]
        say(f"{name:<22} {run['loop']:>9.1f} {run['fit']:>7.1f} {run['evaluation']:>7.1f} "
            f"{run['loop'] / busy:>16.2f}  {run['tasks']:>6}/{run['messages']:<7} {run['whole']:>8.1f}")
    say()
    say("start-up of flwr run (seconds):")
    for name, seconds in flwr["start"].items():
        say(f"  {name:<46} {seconds:>6.2f}")
    say(f"  fedstale's share of the time to the first TRAIN  {flwr['fedstale_share']:>6.2f}")
    say(f"floor of the flwr-run loop on {nodes} SuperNodes: {scans} engine scans x 0.1 s = {scans * 0.1:.1f} s "
        f"({scans * 0.1 / local['loop']:.2f} x the in-process loop)")
    ahead = local["speculative_scans"]
    say(f"  with tasks dispatched ahead of replies that make no new version (estimate): {ahead} scans "
        f"= {ahead * 0.1:.1f} s ({ahead * 0.1 / local['loop']:.2f} x)")
    same = flwr["metrics"] == local["metrics"] and flwr["clients"] == local["clients"]
    say()
    say(f"rows identical (metrics.csv and clients.csv, wall-time columns aside): {'yes' if same else 'NO'}")
    if flwr["leftover"]:
        say(f"processes left behind: {flwr['leftover']}")
    say(f"flwr-run loop / summed fit + evaluation: {flwr['loop'] / (flwr['fit'] + flwr['evaluation']):.2f} "
        "(target <= 1.5)")
    say(f"flwr-run loop / in-process loop (target <= 1.3): {flwr['loop'] / local['loop']:.2f}")
    return 0 if same and not flwr["leftover"] else 1


def yaml_value(text: str) -> Any:
    """A ``--set`` value as YAML reads it (numbers, booleans, strings)."""
    import yaml  # pylint: disable=import-outside-toplevel

    return yaml.safe_load(text)


if __name__ == "__main__":
    raise SystemExit(main())
