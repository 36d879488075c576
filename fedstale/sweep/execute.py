"""Running a sweep's cells: in process, through ``flwr run``, on Ray, with progress lines."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..config import load_config
from ..processes import pids_using, pids_with_env, stop_all
from ..results import read_csv
from ..runner import RunFailed, RunPlan, find_app_dir, run_flower, run_local
from .plan import Cell, plan_sweep, split_cells, write_manifest
from .spec import ERROR_FILE, SWEEP_ID_VARIABLE, SweepSpec


@dataclass
class CellOutcome:
    """What running one cell gave."""

    name: str
    ok: bool
    wall: float
    error: str = ""





def execute_cell(config_path: str, overrides: dict[str, Any], run_dir: str) -> CellOutcome:
    """Run one cell in process with one torch thread; never raises.

    A failure is returned (and written to ``<run_dir>/error.txt``).
    """
    # pylint: disable=import-outside-toplevel
    import logging

    import torch
    from flwr.common.logger import FLOWER_LOGGER

    torch.set_num_threads(1)
    FLOWER_LOGGER.setLevel(logging.WARNING)
    name, started = Path(run_dir).name, time.perf_counter()
    try:
        plan = RunPlan(Path(config_path), overrides, load_config(config_path, overrides), Path(run_dir))
        run_local(plan)
    except Exception as err:  # pylint: disable=broad-except
        text = f"{type(err).__name__}: {err}"
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / ERROR_FILE).write_text(text + "\n\n" + traceback.format_exc(), encoding="utf-8")
        return CellOutcome(name, False, time.perf_counter() - started, text)
    return CellOutcome(name, True, time.perf_counter() - started)


@dataclass
class SweepResult:
    """How a sweep went."""

    out_dir: Path
    cells: list[Cell]
    skipped: list[str]
    outcomes: list[CellOutcome]
    wall: float

    @property
    def failed(self) -> list[CellOutcome]:
        """The cells that failed in this invocation."""
        return [o for o in self.outcomes if not o.ok]


class Progress:
    """Prints one line per event: cells done / running / failed of the total."""

    def __init__(self, total: int, done: int, stream: TextIO) -> None:
        self.total, self.done, self.failed, self.stream = total, done, 0, stream

    def line(self, text: str, running: int) -> None:
        """Print the counts and ``text``."""
        self.stream.write(
            f"[sweep] {self.done}/{self.total} done, {running} running, {self.failed} failed | {text}\n"
        )
        self.stream.flush()

    def record(self, outcome: CellOutcome, running: int, run_dir: Path) -> None:
        """Count an outcome and print it (with the final accuracy of ``run_dir``)."""
        if outcome.ok:
            self.done += 1
            self.line(f"finished {outcome.name} in {outcome.wall:.1f}s{_final(run_dir)}", running)
        else:
            self.failed += 1
            self.line(f"FAILED {outcome.name} after {outcome.wall:.1f}s: {outcome.error}", running)


def _final(run_dir: Path) -> str:
    rows = [r for r in read_csv(run_dir / "metrics.csv") if r["accuracy"] != ""]
    return f", final accuracy {float(rows[-1]['accuracy']):.4f}" if rows else ""


# pylint: disable=too-many-arguments,too-many-locals
def run_sweep(
    spec: SweepSpec,
    out_dir: Path,
    workers: int | None = None,
    tracker: str = "none",
    tracking_uri: str | None = None,
    stream: TextIO | None = None,
    app_dir: Path | None = None,
) -> SweepResult:
    """Plan, then run the cells of ``spec`` not finished yet under ``out_dir``.

    Parameters
    ----------
    spec : SweepSpec
        From :func:`load_spec`.
    out_dir : Path
        The sweep's folder (one subfolder per cell).
    workers : int | None
        Cells at once on a local Ray instance (default: the CPU count); 0 runs
        them one after the other in this process, without Ray. Ignored with
        ``RAY_ADDRESS`` (the cluster's CPUs decide) and with engine ``flower``
        (``flwr run`` one cell at a time).
    tracker, tracking_uri : str, str | None
        Log each cell that finishes to this tracker (:mod:`fedstale.tracking`).
    stream : TextIO | None
        Where progress lines go (default: stderr).
    app_dir : Path | None
        The Flower app folder (engine ``flower``).

    Raises
    ------
    SweepError
        Before any run, if the spec is invalid.
    """
    stream = sys.stderr if stream is None else stream
    out_dir = Path(out_dir).resolve()
    cells = plan_sweep(spec, out_dir)
    app = find_app_dir(app_dir) if spec.engine == "flower" else None
    finished, interrupted, new = split_cells(cells)
    write_manifest(spec, cells, out_dir)
    for cell in interrupted:
        shutil.rmtree(cell.run_dir)
    todo = interrupted + new
    started = time.perf_counter()
    progress = Progress(len(cells), len(finished), stream)
    how = "flwr run" if app else ("this process" if workers == 0 else "Ray")
    progress.line(
        f"sweep {spec.name}: {len(cells)} cells, {len(finished)} finished (skipped), "
        f"{len(interrupted)} interrupted (cleared), {len(todo)} to run in {how} -> {out_dir}",
        0,
    )

    def finish(outcome: CellOutcome, running: int) -> None:
        progress.record(outcome, running, out_dir / outcome.name)
        if outcome.ok and tracker != "none":
            _track(out_dir / outcome.name, tracker, tracking_uri)

    if app is not None:
        outcomes = [_run_flower_cell(c, app, finish) for c in todo]
    elif workers == 0:
        outcomes = []
        for cell in todo:
            outcomes.append(execute_cell(str(cell.config_path), cell.overrides, str(cell.run_dir)))
            finish(outcomes[-1], 0)
    else:
        outcomes = _run_on_ray(todo, workers or os.cpu_count() or 1, finish)
    result = SweepResult(out_dir, cells, [c.name for c in finished], outcomes, time.perf_counter() - started)
    failed = [o.name for o in result.failed]
    progress.line(
        f"sweep {spec.name} ended in {result.wall:.0f}s: {progress.done} done, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
        + f"; results in {out_dir}",
        0,
    )
    return result


def _track(run_dir: Path, tracker: str, tracking_uri: str | None) -> None:
    from .tracking import make_tracker, replay_run  # pylint: disable=import-outside-toplevel

    tracked = make_tracker(tracker, run_dir, tracking_uri)
    if tracked is not None:
        replay_run(run_dir, tracked)


def _run_flower_cell(cell: Cell, app: Path, finish: Callable[[CellOutcome, int], None]) -> CellOutcome:
    started = time.perf_counter()
    plan = RunPlan(cell.config_path, cell.overrides, load_config(cell.config_path, cell.overrides), cell.run_dir)
    try:
        run_flower(plan, app)
        outcome = CellOutcome(cell.name, True, time.perf_counter() - started)
    except RunFailed as err:
        outcome = CellOutcome(cell.name, False, time.perf_counter() - started, str(err))
    finish(outcome, 0)
    return outcome


def _run_on_ray(cells: list[Cell], workers: int, finish: Callable[[CellOutcome, int], None]) -> list[CellOutcome]:
    """Run ``cells`` as Ray tasks; report each outcome as it arrives."""
    if not cells:
        return []
    import ray  # pylint: disable=import-outside-toplevel

    address = os.environ.get("RAY_ADDRESS")
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding fedstale/
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    sweep_id = os.environ.setdefault(SWEEP_ID_VARIABLE, uuid.uuid4().hex)
    temp_dir, saved_path = None, os.environ.get("PYTHONPATH")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        # a private instance (never one that `ray start` recorded); its socket
        # paths must stay under 107 bytes, hence a short /tmp folder, named
        # after the sweep so that whoever kills a sweep can remove it
        temp_dir = tempfile.mkdtemp(prefix=f"fsw-{sweep_id[:8]}-", dir="/tmp")
        os.environ["PYTHONPATH"] = pythonpath
        ray.init(
            address="local",
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=temp_dir,
        )
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(execute_cell)
        pending = {
            task.remote(str(c.config_path), c.overrides, str(c.run_dir)): c for c in cells
        }
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as err:  # pylint: disable=broad-except  # the worker died
                outcome = CellOutcome(cell.name, False, 0.0, f"{type(err).__name__}: {err}")
            outcomes.append(outcome)
            running = sum(1 for c in pending.values() if c.run_dir.exists())
            finish(outcome, running)
        return outcomes
    finally:
        ray.shutdown()
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path
        if temp_dir is not None:
            # Ray's renamed processes no longer show the sweep's variable (pids_using)
            stop_all(lambda: {*pids_with_env(SWEEP_ID_VARIABLE, sweep_id), *pids_using(temp_dir)})
            shutil.rmtree(temp_dir, ignore_errors=True)
