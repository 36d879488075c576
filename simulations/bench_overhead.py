"""Framework overhead of fedstale: against a plain PyTorch loop and Flower's FedAvg.

What is measured
----------------
(a) **fedstale ÷ plain PyTorch loop.** The wall time of a real fedstale
    simulation (``flwr run`` of the app at the repository root, default
    strategy: FedBuff, C=10, K=5, on the virtual clock) divided by the wall
    time of the same local training done in one plain PyTorch loop, in this
    process, sequentially: the same client updates (the clients, in the order
    fedstale's ``clients.csv`` lists them), the same local epochs, batch size,
    optimizer settings and data partitions, with
    :func:`fedstale.client.training.train` on
    :func:`fedstale.data.load_client_data` directly (no Flower, no messages,
    no serialisation). Two fedstale times are reported:

    - *strategy loop*: the event loop only, i.e. the ``wall_time`` of the last
      row of the run's ``metrics.csv`` (seconds since the strategy's clock
      started, after its start-up queries; it ends at the last merge);
    - *whole run*: ``flwr run`` from the command to its exit (SuperLink and
      Ray start, ClientApp workers importing torch, start-up queries, the
      loop, shutdown).

    The headline (last line) is the strategy-loop ratio. Target: <= 1.5 when
    one local update costs about 1 s of compute.

(b) **fedstale ÷ Flower's own FedAvg, per client update.** The same work run
    by stock ``flwr.serverapp.strategy.FedAvg.start()`` (the app in
    ``simulations/baselines/flower_fedavg/``: Flower's FedAvg as the
    ServerApp, fedstale's ClientApp, the very TRAIN config fedstale sends,
    ``fraction_evaluate=0``, no centralized evaluation), with
    ``updates / C`` rounds of C clients, so both make the same number of
    client updates on the same clients (one per SuperNode) with the same local
    work. Compared per update: fedstale's loop seconds per update ÷
    ``FedAvg.start()`` seconds per update (and the same for whole runs).
    Before it starts the clock, the baseline ServerApp asks every node to load
    its partition (the work fedstale does in its start-up queries, outside
    ``metrics.csv``'s ``wall_time``), so neither loop pays for ClientApp
    warm-up. Target: fedstale no slower per update.

How (and why this setup)
------------------------
- **Update cost.** ``client.local_epochs`` is calibrated first: one epoch on
  the partition whose size is closest to the mean partition size is timed
  with the plain loop (median of 5 timings), and the epochs are chosen so that
  one update costs about ``--update-seconds`` (default 1.0 s). The plain
  loop's measured seconds per update is printed (it is the actual cost).
- **Data.** ``--clients`` clients (default 20) with the ``iid`` partitioner by
  default (``--partitioner``): every client then holds about the same number
  of examples, so every update costs about the same and per-update
  comparisons between strategies that pick clients differently (fedstale's
  seeded selection, Flower's ``random.sample``) are fair. The rest of the
  experiment is ``configs/default.yaml``.
- **Workers and threads.** Both ``flwr run`` calls use one client per
  SuperNode (``num-supernodes=N``, fedstale's ``data.num_clients = N``) and
  ``client-resources-num-cpus=1 init-args-num-cpus=W`` with W = ``--workers``
  (default 1): W Ray ClientApp workers, each running one ClientApp at a time
  with one torch thread (fedstale's ``client.num_threads: 1``, which its
  ClientApp applies with ``torch.set_num_threads``). With the default W = 1
  all three contenders train one update at a time on one core with one
  thread, so the ratios measure framework overhead, not parallelism; the
  second core is left to the framework's own processes (SuperLink, server
  loop, Ray) and to other load on the machine. With ``--workers 2`` both
  simulations train two updates at once and ratio (a) then mixes overhead
  with parallel speed-up (the plain loop stays sequential). Note that
  Flower's *default* client resources (2 CPUs per ClientApp) also give one
  ClientApp at a time on these 2-core machines.
- **Asynchrony costs.** fedstale keeps C = 10 updates in flight on the
  virtual clock and merges them in virtual-finish order. It pushes at most
  ``comm.push_window`` messages at a time (default: CPUs + 1), earliest
  virtual finish first, so Flower's engine trains the updates in about the
  order they are merged, and a run that stops leaves at most that many
  trained updates unmerged. The script also prints the steady-state cost per
  merged update (wall time from version 1 to the last version, from
  ``metrics.csv`` evaluated at every version) to separate the pipeline fill
  of the first version from the per-update overhead.
- **Flower's FedAvg round cost.** Under ``flwr run`` in simulation, the
  ServerApp runs in the simulation process with an ``InMemoryGrid``, whose
  ``send_and_receive`` sleeps 0.1 s between pulls (the 3 s sleep of
  ``HttpGrid.send_and_receive`` applies to deployment, not here); a round
  also waits for its slowest client before the next one is dispatched.
- **Isolation.** Each ``flwr run`` gets its own
  :class:`fedstale.simulation.launcher.LocalFederation` (private FLWR_HOME
  in a temp dir, free ports, its own short ``RAY_TMPDIR``; every process it
  started is killed when its ``with`` block ends), so both whole-run times
  include starting a SuperLink. Results and Flower's state go to the temp
  dir, which is deleted at the end unless ``--keep``. The script then checks
  that no process of either federation (SuperLink, SuperExec, raylet, Ray
  workers: every process with its FLWR_HOME) is left, and exits with 1 if
  one is. ``flwr run --stream`` exits with 0 even when the simulation
  crashed, so success is judged by the run's outputs (``metrics.csv``, the
  baseline's timing file), and their absence is an error that shows the
  tail of ``flwr run``'s output.
- **Diagnostics.** A sampler thread records the CPU seconds used by each
  federation's processes (ClientApp workers, the simulation process hosting
  the ServerApp, the SuperLink, the rest), to tell client compute from
  framework work.

Run from the repository root (about 2.5-4 minutes with the defaults)::

    python simulations/bench_overhead.py [--updates 40] [--update-seconds 1.0]

The last line of the output is the strategy-loop overhead ratio (a); the
per-update ratio (b) is printed just before it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import statistics
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

# pylint: disable=wrong-import-position
from fedstale.builders import train_config  # noqa: E402
from fedstale.client.torch_client import (  # noqa: E402
    partition_spec_from,
    set_torch_threads,
    train_settings_from,
)
from fedstale.client.training import pick_device, train  # noqa: E402
from fedstale.config import Config, load_config  # noqa: E402
from fedstale.data import load_client_data, load_split  # noqa: E402
from fedstale.models import build_model  # noqa: E402
from fedstale.simulation.launcher import LocalFederation  # noqa: E402

BASELINE_APP = REPO / "simulations" / "baselines" / "flower_fedavg"
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"


def say(text: str = "") -> None:
    """Print one line now."""
    print(text, flush=True)


# --------------------------------------------------------------------------
# Plain PyTorch: calibration and the reference loop
# --------------------------------------------------------------------------


class PlainTrainer:
    """fedstale's local training, called directly (no Flower)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.train_config = dict(train_config(config))
        self.spec = partition_spec_from(self.train_config, config.data.num_clients)
        self.settings = train_settings_from(self.train_config)
        self.device = pick_device()
        set_torch_threads(config.client.num_threads)
        data = load_split(config.data.dataset, config.data.test_fraction, config.data.seed)
        self.model = build_model(config.model.name, data.spec, seed=config.run.seed)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}

    def data(self, client_id: int) -> tuple[Any, Any]:
        """The client's partition, as fedstale's ClientApp loads it."""
        d = self.config.data
        return load_client_data(d.dataset, d.test_fraction, self.spec, client_id)

    def update(self, client_id: int, epochs: int, seed: int) -> None:
        """One local update from the initial model."""
        x, y = self.data(client_id)
        self.model.load_state_dict(self.initial)
        settings = dataclasses.replace(self.settings, epochs=epochs, seed=seed)
        train(self.model, x, y, settings, self.device)

    def time_epochs(self, client_id: int, epochs: int) -> float:
        """Wall seconds of ``epochs`` epochs on one client."""
        started = time.perf_counter()
        self.update(client_id, epochs, seed=0)
        return time.perf_counter() - started


def calibrate(trainer: PlainTrainer, update_seconds: float) -> tuple[int, int, int, float]:
    """Pick local epochs so one update costs ~``update_seconds``.

    Returns (epochs, client id timed, its examples, seconds per epoch).
    """
    sizes = [len(trainer.data(c)[0]) for c in range(trainer.config.data.num_clients)]
    mean = statistics.fmean(sizes)
    client = min(range(len(sizes)), key=lambda c: (abs(sizes[c] - mean), c))
    first = trainer.time_epochs(client, 2) / 2  # warm-up, rough estimate
    chunk = max(1, math.ceil(0.2 / max(first, 1e-4)))
    per_epoch = statistics.median(trainer.time_epochs(client, chunk) / chunk for _ in range(5))
    epochs = max(1, round(update_seconds / per_epoch))
    return epochs, client, sizes[client], per_epoch


def plain_loop(trainer: PlainTrainer, updates: list[tuple[int, int]]) -> float:
    """Wall seconds of the given (client id, epochs) updates, one after another."""
    started = time.perf_counter()
    for index, (client_id, epochs) in enumerate(updates):
        trainer.update(client_id, epochs, seed=index)
    return time.perf_counter() - started


# --------------------------------------------------------------------------
# flwr run
# --------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def describe_failure(proc: subprocess.CompletedProcess[str] | None, what: str) -> str:
    """An error message with the tail of ``flwr run``'s output."""
    if proc is None:
        return f"{what}: no output"
    return (
        f"{what} (flwr run exit code {proc.returncode}); last output:\n"
        + (proc.stdout or "")[-3000:]
        + "\n"
        + (proc.stderr or "")[-3000:]
    )


class CpuSampler:
    """CPU seconds used by one federation's processes, by role (a diagnostic).

    A thread reads, every ``interval`` seconds, ``utime + stime`` of every
    process whose environment names ``marker`` (the federation's FLWR_HOME,
    inherited by the SuperLink, the simulation and Ray's processes). CPU
    used by a process after its last sample is missed (<= ``interval``).
    """

    ROLES = (
        ("ClientApp workers", "ray::ClientAppActor"),
        ("ServerApp + simulation engine", "flwr-simulation"),
        ("SuperLink", "flower-superlink"),
    )
    OTHER = "other (flwr CLI, SuperExec, Ray daemons)"

    def __init__(self, marker: str, interval: float = 0.5) -> None:
        self.marker = f"FLWR_HOME={marker}".encode()
        self.interval = interval
        self.tick = os.sysconf("SC_CLK_TCK")
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Read the CPU time of every matching process now."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if self.marker + b"\0" not in (entry / "environ").read_bytes() + b"\0":
                    continue
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / self.tick
            pid = int(entry.name)
            previous = self.seen.get(pid, ("", 0.0))[1]
            self.seen[pid] = (command, max(cpu, previous))

    def by_role(self) -> dict[str, float]:
        """CPU seconds per role."""
        out = {name: 0.0 for name, _ in self.ROLES}
        out[self.OTHER] = 0.0
        for command, cpu in self.seen.values():
            role = next((name for name, key in self.ROLES if key in command), self.OTHER)
            out[role] += cpu
        return out


def run_flwr(
    work: Path,
    name: str,
    app_dir: Path,
    run_config: dict[str, Any],
    federation_config: str,
    timeout: float,
) -> dict[str, Any]:
    """``flwr run`` in a private federation.

    Returns the process (None on timeout), its wall seconds, the CPU seconds
    of the federation's processes by role, and the PIDs still alive after the
    federation was stopped (should be none). The federation (SuperLink,
    SuperExec, simulation, Ray) is stopped before this returns, whatever
    happened.
    """
    cwd = work / f"{name}-cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    proc = None
    with LocalFederation(work / f"{name}-flwr") as fed:
        with CpuSampler(str(fed.flwr_home)) as sampler:
            started = time.perf_counter()
            try:
                proc = fed.run(
                    app_dir, run_config, federation_config=federation_config,
                    timeout=timeout, cwd=cwd,
                )
            except subprocess.TimeoutExpired:
                say(f"  {name}: flwr run did not finish within {timeout:.0f}s")
            wall = time.perf_counter() - started
    return {"proc": proc, "whole": wall, "cpu": sampler.by_role(), "leftover": fed.processes()}


def fedstale_run(
    work: Path, overrides: dict[str, Any], federation_config: str, timeout: float
) -> dict[str, Any]:
    """fedstale's default strategy under ``flwr run``; its timings and updates."""
    out = work / "fedstale-results"
    run_config = dict(overrides)
    run_config["run.output_dir"] = str(out)
    run = run_flwr(work, "fedstale", REPO, run_config, federation_config, timeout)
    proc = run["proc"]
    found = sorted(out.glob("*/metrics.csv"))
    if proc is None or len(found) != 1 or not read_csv(found[0]):
        raise RuntimeError(describe_failure(proc, "fedstale wrote no metrics.csv"))
    run_dir = found[0].parent
    metrics = read_csv(run_dir / "metrics.csv")
    clients = read_csv(run_dir / "clients.csv")
    last = metrics[-1]
    if int(last["version"]) != int(overrides["stop.num_updates"]):
        raise RuntimeError(describe_failure(proc, f"fedstale stopped at version {last['version']}"))
    trained = [r for r in clients if r["epochs"] not in ("", None)]
    run.update({
        "loop": float(last["wall_time"]),
        "updates": int(last["updates"]),
        "failures": int(last["failures"]),
        "trained": [(int(r["client_id"]), int(float(r["epochs"]))) for r in trained],
        "examples": [int(r["num_examples"]) for r in trained],
        "rows": [(int(r["version"]), int(r["updates"]), float(r["wall_time"])) for r in metrics],
        "run_dir": run_dir,
    })
    return run


def fedavg_run(
    work: Path,
    overrides: dict[str, Any],
    rounds: int,
    per_round: int,
    num_nodes: int,
    federation_config: str,
    timeout: float,
) -> dict[str, Any]:
    """Flower's FedAvg baseline under ``flwr run``; its timings."""
    timing = work / "fedavg-timing.json"
    text = " ".join(f"{k}={v}" for k, v in overrides.items())
    run_config = {
        "config": str(DEFAULT_CONFIG),
        "overrides": text,
        "num-rounds": rounds,
        "clients-per-round": per_round,
        "min-nodes": num_nodes,
        "timing-file": str(timing),
    }
    run = run_flwr(work, "fedavg", BASELINE_APP, run_config, federation_config, timeout)
    if run["proc"] is None or not timing.is_file():
        raise RuntimeError(describe_failure(run["proc"], "the FedAvg baseline wrote no timings"))
    run.update(json.loads(timing.read_text(encoding="utf-8")))
    return run


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:  # pylint: disable=too-many-locals,too-many-statements
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=(
            "Wall-time overhead of fedstale (real `flwr run`, default FedBuff strategy) "
            "against (a) the same local training in one plain PyTorch loop and (b) "
            "Flower's own FedAvg.start() doing the same number of client updates. "
            "The last line is the strategy-loop overhead ratio (a)."
        )
    )
    parser.add_argument("--updates", type=int, default=40,
                        help="total client updates (rounded up to a multiple of C and K; default 40)")
    parser.add_argument("--update-seconds", type=float, default=1.0,
                        help="target compute seconds of one local update; local epochs are "
                        "calibrated to it (default 1.0)")
    parser.add_argument("--clients", type=int, default=20,
                        help="number of clients = SuperNodes (default 20)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="fedstale's C and FedAvg's clients per round "
                        "(default: configs/default.yaml's, 10)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray ClientApp workers (init-args-num-cpus; 1 CPU and 1 torch "
                        "thread each; default 1, see the module docstring)")
    parser.add_argument("--partitioner", default="iid", choices=("iid", "dirichlet", "pathological"),
                        help="data partitioner (default iid: equal-cost updates)")
    parser.add_argument("--local-epochs", type=int, default=0,
                        help="skip calibration and use this many local epochs (default 0: calibrate)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (run folders, Flower and Ray state) and print its path")
    args = parser.parse_args(argv)
    if args.updates < 1 or args.update_seconds <= 0 or args.clients < 1 or args.workers < 1:
        parser.error("--updates, --update-seconds, --clients and --workers must be positive")

    base = load_config(DEFAULT_CONFIG)
    per_round = args.concurrency or base.strategy.concurrency
    if per_round > args.clients:
        parser.error(f"--concurrency {per_round} exceeds --clients {args.clients}")
    buffer_size = base.strategy.buffer_size
    step = per_round * buffer_size // math.gcd(per_round, buffer_size)
    updates = step * math.ceil(args.updates / step)
    if updates != args.updates:
        say(f"note: --updates {args.updates} rounded up to {updates} "
            f"(a multiple of C={per_round} and K={buffer_size})")

    overrides: dict[str, Any] = {
        "data.num_clients": args.clients,
        "data.partitioner": args.partitioner,
        "strategy.concurrency": per_round,
    }
    config = load_config(DEFAULT_CONFIG, overrides)
    trainer = PlainTrainer(config)
    threads = config.client.num_threads
    if args.local_epochs > 0:
        epochs = args.local_epochs
        say(f"local epochs: {epochs} (given)")
    else:
        epochs, client, size, per_epoch = calibrate(trainer, args.update_seconds)
        say(f"calibration: one epoch on client {client} ({size} examples, batch "
            f"{config.client.batch_size}, {threads} torch thread) takes {per_epoch * 1000:.1f} ms "
            f"-> local_epochs = {epochs} for ~{args.update_seconds:g} s per update")
    overrides["client.local_epochs"] = epochs
    config = load_config(DEFAULT_CONFIG, overrides)
    trainer = PlainTrainer(config)

    versions = updates // buffer_size
    federation_config = (
        f"num-supernodes={args.clients} client-resources-num-cpus=1 "
        f"init-args-num-cpus={args.workers}"
    )
    timeout = 600 + 10 * updates * args.update_seconds
    say(f"setup: {args.clients} clients (one per SuperNode), partitioner {args.partitioner}, "
        f"{updates} client updates; fedstale FedBuff C={per_round} K={buffer_size} "
        f"({versions} versions); Flower FedAvg {updates // per_round} rounds x {per_round} "
        f"clients; --federation-config \"{federation_config}\"")

    work = Path(tempfile.mkdtemp(prefix="fso-"))
    status = 0
    try:
        say("running fedstale (flwr run of the repository app) ...")
        fed = fedstale_run(
            work,
            dict(overrides, **{
                "stop.num_updates": versions,
                # every version: wall_time per version gives the steady-state rate
                "evaluation.every": 1,
                "output.checkpoint_every": 0,
                "output.plots": False,
            }),
            federation_config,
            timeout,
        )
        say(f"  whole flwr run {fed['whole']:.1f}s, strategy loop {fed['loop']:.1f}s, "
            f"{fed['updates']} updates ({fed['failures']} failed)")

        say("running Flower FedAvg (flwr run of simulations/baselines/flower_fedavg) ...")
        avg = fedavg_run(
            work, overrides, updates // per_round, per_round, args.clients,
            federation_config, timeout,
        )
        say(f"  whole flwr run {avg['whole']:.1f}s, FedAvg.start() {avg['strategy_seconds']:.1f}s, "
            f"{avg['updates']} updates ({avg['failures']} failed), warm-up "
            f"{avg['warmup_seconds']:.1f}s, sum of client fit-seconds {avg['fit_seconds']:.1f}s")

        say(f"running the plain PyTorch loop ({len(fed['trained'])} updates, sequential) ...")
        sizes = [len(trainer.data(c)[0]) for c, _ in fed["trained"]]
        if sizes != fed["examples"]:
            raise RuntimeError("the plain loop's partitions differ from fedstale's clients.csv")
        cpu_started = time.process_time()
        plain = plain_loop(trainer, fed["trained"])
        plain_cpu = time.process_time() - cpu_started
        plain_per_update = plain / max(len(fed["trained"]), 1)
        say(f"  {plain:.1f}s, {plain_per_update:.3f}s per update")

        fed_per = fed["loop"] / max(fed["updates"], 1)
        avg_per = avg["strategy_seconds"] / max(avg["updates"], 1)
        fed_whole_per = fed["whole"] / max(fed["updates"], 1)
        avg_whole_per = avg["whole"] / max(avg["updates"], 1)
        say()
        say("contender                 updates   loop s  per update   whole run s")
        say(f"plain PyTorch loop        {len(fed['trained']):>7} {plain:>8.1f} "
            f"{plain_per_update:>10.3f}s")
        say(f"fedstale FedBuff          {fed['updates']:>7} {fed['loop']:>8.1f} {fed_per:>10.3f}s "
            f"{fed['whole']:>13.1f}")
        say(f"Flower FedAvg.start()     {avg['updates']:>7} {avg['strategy_seconds']:>8.1f} "
            f"{avg_per:>10.3f}s {avg['whole']:>13.1f}")
        say(f"mean examples per update: fedstale {statistics.fmean(fed['examples']):.1f}, "
            f"FedAvg {avg['examples'] / max(avg['updates'], 1):.1f}; Flower FedAvg's clients "
            f"report {avg['fit_seconds'] / max(avg['updates'], 1):.3f}s of fit per update")
        say(f"start-up + shutdown outside the loops: fedstale {fed['whole'] - fed['loop']:.1f}s, "
            f"FedAvg {avg['whole'] - avg['strategy_seconds']:.1f}s (of which "
            f"{avg['warmup_seconds']:.1f}s its pre-loop partition loading)")
        first = next((r for r in fed["rows"] if r[0] >= 1), None)
        last = fed["rows"][-1]
        if first is not None and last[1] > first[1]:
            steady = (last[2] - first[2]) / (last[1] - first[1])
            say(f"fedstale keeps C={per_round} updates in flight on the virtual clock and "
                f"merges them in virtual order: its first version took {first[2]:.1f}s for "
                f"{first[1]} merged updates (pipeline fill). Steady-state cost from version {first[0]} to "
                f"{last[0]}: {steady:.3f}s per merged update ({steady / plain_per_update:.2f}x "
                f"plain, {steady / avg_per:.2f}x FedAvg)")
        for label, run in (("fedstale", fed), ("Flower FedAvg", avg)):
            say(f"CPU seconds during the {label} flwr run: "
                + ", ".join(f"{k} {v:.1f}" for k, v in run["cpu"].items()))
        say(f"CPU seconds of the plain loop: {plain_cpu:.1f}")
        if fed["failures"] or avg["failures"]:
            say("WARNING: some client updates failed; the comparison is not like for like")
        leftovers = fed["leftover"] + avg["leftover"]
        if leftovers:
            status = 1
            say("WARNING: processes left behind (PIDs): " + ", ".join(map(str, leftovers)))
        else:
            say("leftover processes (SuperLink, SuperExec, raylet, Ray workers): none")
        say(f"overhead fedstale / plain PyTorch loop (whole flwr run, ~{plain_per_update:.1f} s "
            f"updates): {fed['whole'] / plain:.2f}x")
        say(f"per-update fedstale / Flower FedAvg (whole flwr run): "
            f"{fed_whole_per / avg_whole_per:.2f}x")
        say(f"per-update fedstale / Flower FedAvg (strategy loops, {fed_per:.3f}s vs "
            f"{avg_per:.3f}s per update): {fed_per / avg_per:.2f}x")
        say(f"overhead fedstale / plain PyTorch loop (strategy loop, ~{plain_per_update:.1f} s "
            f"updates): {fed['loop'] / plain:.2f}x")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
