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
seconds, ``wall_time`` of the last ``metrics.csv`` row), the steady rate
(the same after the first evaluation interval, which pays one-off costs
such as torch's lazy imports at the first optimizer), peak RSS of the
server (the in-process run's whole process: server and ClientApp together)
and of each ClientApp process, and the most base models the strategy held
at once (the ``memory:`` part of its ``transport:`` log line; see
:class:`fedstale.strategies.versions.SnapshotStore`). Machine load
(``os.getloadavg``) is printed before and after each case: these 2-core
machines are shared. The last line is flwr-run updates/s ÷ in-process
updates/s for the headline case (N = 10,000, C = 1,000) when both ran.

Run from the repository root::

    python simulations/bench_scale.py                      # the 4 cases, both ways (minutes)
    python simulations/bench_scale.py --quick              # N = 1,000, C = 100, 500 updates
    python simulations/bench_scale.py --clients 100000 1000000 --concurrency 1000 --modes inprocess
    python simulations/bench_scale.py --per-client --clients 10000 1000000   # server bytes per client
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
TRANSPORT = re.compile(r"transport: (\d+) training tasks in (\d+) messages")
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
        **EXTRA,
    }


EXTRA: dict[str, Any] = {}
"""``--set`` overrides, on top of every case's (in the children too: they get ``--set`` as well)."""


def yaml_value(text: str) -> Any:
    """A ``--set`` value as YAML reads it."""
    import yaml  # pylint: disable=import-outside-toplevel

    return yaml.safe_load(text)


def steady_rate(evaluations: list[dict[str, Any]]) -> float:
    """Updates/s from the second evaluation row to the last (the first versions pay one-off
    costs: torch's lazy imports at the first optimizer, the first batches' size estimate)."""
    if len(evaluations) < 3:
        return float("nan")
    first, last = evaluations[1], evaluations[-1]
    seconds = float(last["wall_time"]) - float(first["wall_time"])
    return (int(last["updates"]) - int(first["updates"])) / seconds if seconds > 0 else float("nan")


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
        "steady": steady_rate(recorder.evaluations),
        "whole": whole,
        "server_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bases": strategy.snapshots.peak,
        "per_message": strategy.transport.tasks_pushed / max(1, strategy.transport.messages_pushed),
    }), flush=True)


def in_process(clients: int, concurrency: int, updates: int, timeout: float) -> dict[str, Any]:
    """One case in process, in a fresh child (its own peak RSS)."""
    command = [sys.executable, __file__, "--child", str(clients), str(concurrency), str(updates)]
    command += ["--set", *(f"{k}={v}" for k, v in EXTRA.items())] if EXTRA else []
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
        return 0.0
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
    from fedstale.results import read_csv
    from fedstale.simulation.launcher import LocalFederation, raise_if_failed, run_folder

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
        run_dir = run_folder(out, log)
        metrics = read_csv(run_dir / "metrics.csv")
        rows = len(read_csv(run_dir / "clients.csv"))
        bases = MEMORY.findall(log)
        transport = TRANSPORT.findall(log)
        return {
            "updates": rows,
            "loop": float(metrics[-1]["wall_time"]),
            "steady": steady_rate(metrics),
            "server_mb": max(sampler.of("serverapp"), default=0.0),
            "client_mb": sampler.of("clientapp"),
            "other_mb": sum(sampler.of("other")),
            "bases": int(bases[-1]) if bases else -1,
            "per_message": int(transport[-1][0]) / max(1, int(transport[-1][1])) if transport else float("nan"),
            "leftover": leftover,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- what the server keeps per client ----------------------------------------------------


def per_client_bytes(population: int) -> dict[str, float]:
    """Bytes per client of the server's per-client structures, measured with tracemalloc.

    The same classes the strategy builds at start-up: the pool's population
    (:meth:`~fedstale.strategies.pool.ClientPool.populate`), the client →
    SuperNode map (:class:`~fedstale.strategies.placement.Placement`) and the
    training-set sizes the SuperNodes report, plus one dispatch's idle
    clients (:class:`~fedstale.strategies.idle.IdleClients`, C = 1,000 busy).
    """
    # pylint: disable=import-outside-toplevel
    import tracemalloc

    from fedstale.strategies.idle import IdleClients
    from fedstale.strategies.placement import Placement
    from fedstale.strategies.pool import ClientPool, RandomSelection

    def measure(build) -> float:  # type: ignore[no-untyped-def]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept
        return (after - before) / population

    pool = ClientPool(RandomSelection(0))
    return {
        "pool.clients (set of ids)": measure(lambda: pool.populate(population) or pool.clients),
        "placement.node_of (client -> node)": measure(lambda: Placement([11, 12], population, 60.0)),
        "placement.num_examples (sizes)": measure(lambda: {c: 20 + c % 80 for c in range(population)}),
        "idle clients at a dispatch (C=1,000)": measure(lambda: IdleClients(population, range(1000))),
        "books of a client once it trained": measure(lambda: trained_books(population)),
    }


def trained_books(population: int) -> list[dict]:
    """The per-client entries a client adds once it trained: the pool's books
    (tasks sent, failures, last staleness, duration, loss, examples) and its
    speed cached by the delay model."""
    books: list[dict] = [{} for _ in range(7)]
    for c in range(population):
        books[0][c] = 1
        books[1][c] = 0
        books[2][c] = c % 7
        books[3][c] = float(c) * 0.5
        books[4][c] = float(c) * 0.25
        books[5][c] = 20 + c % 80
        books[6][c] = float(c) * 0.125
    return books


# --- the table ---------------------------------------------------------------------------


def row(mode: str, clients: int, concurrency: int, run: dict[str, Any]) -> str:
    """One line of the table."""
    rate = run["updates"] / run["loop"] if run["loop"] > 0 else float("nan")
    workers = run.get("client_mb")
    shown = "(same process)" if workers is None else " ".join(f"{m:.0f}" for m in workers) or "-"
    return (f"{mode:<11}{clients:>10,}{concurrency:>7,}{run['updates']:>9,}{run['loop']:>9.1f}"
            f"{rate:>10.1f}{run['steady']:>8.1f}{run['per_message']:>10.1f}{run['server_mb']:>11.0f}  "
            f"{shown:<18}{run['bases']:>7}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1_000, 10_000], help="populations N")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 1_000], help="concurrencies C")
    parser.add_argument("--updates", type=int, default=2_000, help="updates per case")
    parser.add_argument("--modes", nargs="+", choices=("inprocess", "flwr"), default=["inprocess", "flwr"])
    parser.add_argument("--quick", action="store_true", help="N = 1,000, C = 100, 500 updates")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every case, e.g. comm.batch_seconds=1")
    parser.add_argument("--per-client", action="store_true",
                        help="only print the server's bytes per client at each --clients")
    parser.add_argument("--child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        EXTRA.update({k: yaml_value(v) for k, _, v in (item.partition("=") for item in args.set)})
        child(*args.child)
        return 0
    if args.per_client:
        for population in args.clients:
            parts = per_client_bytes(population)
            say(f"N={population:,}: " + "; ".join(f"{k} {v:.0f} B" for k, v in parts.items())
                + f"; total {sum(parts.values()):.0f} B/client")
        return 0
    EXTRA.update({k: yaml_value(v) for k, _, v in (item.partition("=") for item in args.set)})
    if args.quick:
        args.clients, args.concurrency, args.updates = [1_000], [100], 500
    cases = [(n, c) for n in args.clients for c in args.concurrency if c <= n]
    say(f"FedBuff (buffer 10) on synthetic(1, 1), logreg, {args.updates:,} updates a case; {load()}")
    header = (f"{'mode':<11}{'clients':>10}{'C':>7}{'updates':>9}{'loop s':>9}{'updates/s':>10}{'steady':>8}{'tasks/msg':>10}"
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
    say("updates/s: updates / loop s; steady: updates/s after the first evaluation interval; "
        "server MB: peak RSS of the ServerApp process (in process: the whole process, ClientApp "
        "included); ClientApp MB: each ClientApp process; bases: most base models held at once")
    key = HEADLINE if HEADLINE in cases else (cases[-1] if cases else None)
    if key and ("flwr", *key) in results and ("inprocess", *key) in results:
        flwr, local = results[("flwr", *key)], results[("inprocess", *key)]
        ratio = (flwr["updates"] / flwr["loop"]) / (local["updates"] / local["loop"])
        steady = flwr["steady"] / local["steady"]
        say(f"steady-state ratio: {steady:.2f}")
        say(f"flwr-run updates/s / in-process updates/s at N={key[0]:,}, C={key[1]:,} "
            f"(target >= 1/1.5 = 0.67): {ratio:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
