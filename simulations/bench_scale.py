"""Scale: thousands of clients at concurrency 100 and 1,000, through ``flwr run`` and in process.

What is measured
----------------
For each population N (``--clients``, default 1,000 and 10,000) and
concurrency C (``--concurrency``, default 100 and 1,000; C <= N), the same
experiment: ``configs/default.yaml`` (FedBuff, buffers of 10 updates) on
FedProx's ``synthetic(1, 1)`` data (:mod:`fedstale.data.synthetic`, small
clients: 10 + ⌊LogNormal(2, 1)⌋ examples, at most 100) with multinomial
logistic regression (``logreg``, 610 parameters), one local epoch of one
batch, the default virtual delays, ``--updates`` updates (default 2,000),
evaluated every 50 versions. Two ways:

- **in process**: :func:`fedstale.simulation.local_grid.run_in_process`
  (fedstale's LocalGrid: no SuperLink, no Ray; the ClientApp runs in the
  same process), in a fresh child process per case, so its peak RSS
  (``ru_maxrss``) is that case's alone;
- **flwr run**: ``flwr run`` of the app on Flower's default simulation
  federation (2 SuperNodes, Ray backend), batching on
  (``comm.tasks_per_message: 0``, auto), in a fresh private ``FLWR_HOME``
  (:class:`fedstale.simulation.launcher.LocalFederation`; every process it
  started is stopped by PID at the end). Every 0.2 s the script reads
  ``VmHWM`` (peak RSS) from ``/proc/<pid>/status`` of each process of the
  federation and keeps the largest per process: the ServerApp process
  (``flwr-serverapp``/``flwr-simulation``, which hosts the strategy), the
  ClientApp processes (Ray's ``ClientAppActor`` workers) and the rest
  (SuperLink, Ray's daemons).

Printed per case: updates/s (updates received ÷ the strategy loop's wall
seconds, ``wall_time`` of the last ``metrics.csv`` row), peak RSS of the
server (the in-process run's whole process: server and ClientApp together)
and of each ClientApp process, and the most base models the strategy held
at once (its ``memory:`` log line; see
:class:`fedstale.strategies.versions.SnapshotStore`). Machine load
(``os.getloadavg``) is printed before and after each case: these 2-core
machines are shared. The last line is flwr-run updates/s ÷ in-process
updates/s for the headline case (N = 10,000, C = 1,000) when both ran.

Run from the repository root::

    python simulations/bench_scale.py                      # the 4 cases, both ways (minutes)
    python simulations/bench_scale.py --quick              # N = 1,000, C = 100, 500 updates
    python simulations/bench_scale.py --clients 100000 1000000 --concurrency 1000 --modes inprocess
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIG = REPO / "configs" / "default.yaml"
MEMORY = re.compile(r"memory: at most (\d+) base models held at once")
HEADLINE = (10_000, 1_000)


def say(text: str = "") -> None:
    """Print one line now."""
    print(text, flush=True)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}/{fifteen:.2f} ({os.cpu_count()} CPUs)"


def overrides(clients: int, concurrency: int, updates: int, buffer: int = 10) -> dict[str, Any]:
    """The experiment of one case (on top of configs/default.yaml)."""
    return {
        "data.dataset": "synthetic",
        "model.name": "logreg",
        "data.num_clients": clients,
        "data.synthetic.alpha": 1.0,
        "data.synthetic.beta": 1.0,
        "data.synthetic.min_samples": 10,
        "data.synthetic.samples_mu": 2.0,
        "data.synthetic.samples_sigma": 1.0,
        "data.synthetic.max_samples": 100,
        "client.batch_size": 100,
        "strategy.concurrency": concurrency,
        "strategy.buffer_size": buffer,
        "stop.num_updates": max(1, updates // buffer),
        "evaluation.every": 50,
        "output.plots": False,
        "output.checkpoint_every": 0,
    }


# --- in process: one child process per case ---------------------------------------------


def child(clients: int, concurrency: int, updates: int) -> None:
    """Run one case in this process and print its numbers as one JSON line."""
    # pylint: disable=import-outside-toplevel
    from fedstale.config import load_config
    from fedstale.simulation.local_grid import run_in_process
    from fedstale.strategies import MemoryRecorder

    config = load_config(CONFIG, overrides(clients, concurrency, updates))
    recorder = MemoryRecorder()
    started = time.perf_counter()
    _, strategy = run_in_process(config, recorder)
    whole = time.perf_counter() - started
    print(json.dumps({
        "updates": len(recorder.updates),
        "loop": float(recorder.evaluations[-1]["wall_time"]),
        "whole": whole,
        "server_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bases": strategy.snapshots.peak,
    }), flush=True)


def in_process(clients: int, concurrency: int, updates: int, timeout: float) -> dict[str, Any]:
    """One case in process, in a fresh child (its own peak RSS)."""
    command = [sys.executable, __file__, "--child", str(clients), str(concurrency), str(updates)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"in-process case failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(lines[-1])


# --- flwr run ----------------------------------------------------------------------------


def classify(cmdline: str) -> str:
    """Which part of a federation a process is, from its command line."""
    if "ClientAppActor" in cmdline or "flwr-clientapp" in cmdline:
        return "clientapp"
    if "flwr-serverapp" in cmdline or "flwr-simulation" in cmdline:
        return "serverapp"
    return "other"


def vm_hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of ``pid`` in MiB, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakSampler(threading.Thread):
    """Reads every 0.2 s the VmHWM of the processes ``find()`` lists; keeps each one's largest."""

    def __init__(self, find) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.find = find
        self.peaks: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            for pid in self.find():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                peak = vm_hwm_mb(pid)
                kind = classify(cmdline)
                if peak > self.peaks.get(pid, (kind, 0.0))[1]:
                    self.peaks[pid] = (kind, peak)

    def of(self, kind: str) -> list[float]:
        """Peaks of the processes of ``kind``, largest first."""
        return sorted((p for k, p in self.peaks.values() if k == kind), reverse=True)


def through_flwr_run(clients: int, concurrency: int, updates: int, timeout: float) -> dict[str, Any]:
    """One case through ``flwr run`` in a fresh private federation."""
    # pylint: disable=import-outside-toplevel
    from fedstale.simulation.launcher import LocalFederation, raise_if_failed

    work = Path(tempfile.mkdtemp(prefix="fst-scale-"))
    out = work / "results"
    run_config = {"config": str(CONFIG), **overrides(clients, concurrency, updates),
                  "comm.tasks_per_message": 0, "run.output_dir": str(out)}
    try:
        with LocalFederation(work) as fed:
            sampler = PeakSampler(fed.processes)
            sampler.start()
            try:
                proc = fed.run(REPO, run_config, timeout=timeout, cwd=work)
            finally:
                sampler.done.set()
                sampler.join()
            raise_if_failed(proc)
        leftover = fed.processes()
        log = proc.stdout + proc.stderr
        found = sorted(out.glob("*/metrics.csv"))
        if len(found) != 1:
            raise RuntimeError(f"flwr run wrote {len(found)} metrics.csv; output:\n{log[-3000:]}")
        import csv

        with found[0].open(newline="", encoding="utf-8") as handle:
            metrics = list(csv.DictReader(handle))
        with (found[0].parent / "clients.csv").open(newline="", encoding="utf-8") as handle:
            rows = sum(1 for _ in csv.DictReader(handle))
        bases = MEMORY.findall(log)
        return {
            "updates": rows,
            "loop": float(metrics[-1]["wall_time"]),
            "server_mb": max(sampler.of("serverapp"), default=0.0),
            "client_mb": sampler.of("clientapp"),
            "other_mb": sum(sampler.of("other")),
            "bases": int(bases[-1]) if bases else -1,
            "leftover": leftover,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the table ---------------------------------------------------------------------------


def row(mode: str, clients: int, concurrency: int, run: dict[str, Any]) -> str:
    """One line of the table."""
    rate = run["updates"] / run["loop"] if run["loop"] > 0 else float("nan")
    workers = run.get("client_mb")
    shown = "(same process)" if workers is None else " ".join(f"{m:.0f}" for m in workers) or "-"
    return (f"{mode:<11}{clients:>10,}{concurrency:>7,}{run['updates']:>9,}{run['loop']:>9.1f}"
            f"{rate:>10.1f}{run['server_mb']:>11.0f}  {shown:<18}{run['bases']:>7}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1_000, 10_000], help="populations N")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 1_000], help="concurrencies C")
    parser.add_argument("--updates", type=int, default=2_000, help="updates per case")
    parser.add_argument("--modes", nargs="+", choices=("inprocess", "flwr"), default=["inprocess", "flwr"])
    parser.add_argument("--quick", action="store_true", help="N = 1,000, C = 100, 500 updates")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.quick:
        args.clients, args.concurrency, args.updates = [1_000], [100], 500
    cases = [(n, c) for n in args.clients for c in args.concurrency if c <= n]
    say(f"FedBuff (buffer 10) on synthetic(1, 1), logreg, {args.updates:,} updates a case; {load()}")
    header = (f"{'mode':<11}{'clients':>10}{'C':>7}{'updates':>9}{'loop s':>9}{'updates/s':>10}"
              f"{'server MB':>11}  {'ClientApp MB':<18}{'bases':>7}")
    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    lines = []
    failed = False
    for clients, concurrency in cases:
        for mode in args.modes:
            say(f"{mode} N={clients:,} C={concurrency:,} ... ({load()})")
            try:
                if mode == "inprocess":
                    run = in_process(clients, concurrency, args.updates, args.timeout)
                else:
                    run = through_flwr_run(clients, concurrency, args.updates, args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                say(f"  failed: {str(err)[-1500:]}")
                failed = True
                continue
            results[(mode, clients, concurrency)] = run
            lines.append(row("flwr run" if mode == "flwr" else "in process", clients, concurrency, run))
            say("  " + lines[-1])
            if run.get("leftover"):
                say(f"  processes left behind: {run['leftover']}")
                failed = True
    say()
    say(header)
    say("-" * len(header))
    for line in lines:
        say(line)
    say(f"after: {load()}")
    say("server MB: peak RSS of the ServerApp process (in process: the whole process, ClientApp "
        "included); ClientApp MB: each ClientApp process; bases: most base models held at once")
    key = HEADLINE if HEADLINE in cases else (cases[-1] if cases else None)
    if key and ("flwr", *key) in results and ("inprocess", *key) in results:
        flwr, local = results[("flwr", *key)], results[("inprocess", *key)]
        ratio = (flwr["updates"] / flwr["loop"]) / (local["updates"] / local["loop"])
        say(f"flwr-run updates/s / in-process updates/s at N={key[0]:,}, C={key[1]:,} "
            f"(target >= 1/1.5 = 0.67): {ratio:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
