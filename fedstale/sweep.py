"""Sweeps: many experiments from one spec, run in parallel, resumable.

A sweep spec is a YAML file::

    name: delays                    # the sweep's folder name (default: the file's stem)
    config: configs/default.yaml    # base experiment
    overrides:                      # applied to every cell
      stop.num_updates: 100
    cells:                          # explicit cells (an axis; optional)
      - {name: fedbuff}
      - {name: fedasync, config: configs/fedasync.yaml, stop.num_updates: 500}
    grid:                           # axes, crossed with each other and with the cells
      strategy.buffer_size: [5, 10]           # a field and its values
      delay:                                  # or named sets of overrides
        - {name: constant, delay.speed.distribution: constant, delay.speed.value: 0.02}
        - {name: pareto}
    seeds: [0, 1, 2, 3, 4]          # sets run.seed (and data.seed with seed_data: true)
    seed_data: false
    engine: local                   # local (in process, default) or flower (flwr run)

Every cell is one run folder ``<out>/<cell name>/``; the name is made of the
labels of the axes that vary (``fedbuff_buffer_size-5_delay-constant_seed-0``),
a label being the ``name`` of a set of overrides or the field's value.
``config`` and ``name`` are the only keys of a cell or a set of overrides
that are not config fields. Later layers win: base config < ``overrides`` <
cell < grid axes < seed; two axes setting the same field is an error.

:func:`load_spec` and :func:`plan_sweep` check everything before any run
starts (unknown keys, and :func:`fedstale.config.load_config` on every
cell), raising one :class:`SweepError` listing each problem. :func:`run_sweep`
then skips finished cells (``model.pt`` and at least one ``metrics.csv``
row), clears and reruns interrupted ones, and runs the rest as Ray tasks
(one CPU and one torch thread each; ``RAY_ADDRESS`` names a cluster,
otherwise a private local Ray instance of ``workers`` CPUs is started and
stopped, by PID, at the end). A failed cell is reported and the sweep goes
on. ``<out>/sweep.yaml`` lists the axes and cells for :mod:`fedstale.report`.
"""

from __future__ import annotations

import itertools
import os
import re
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

import yaml

from .config import ConfigError, flatten, load_config, resolve_config_path, schema_fields, to_dict
from .processes import pids_with_env, stop_all
from .results import read_csv
from .runner import APP_DIR, ENGINES, RunFailed, RunPlan, find_app_dir, run_flower, run_local

SPEC_KEYS = ("name", "config", "overrides", "grid", "cells", "seeds", "seed_data", "engine")
"""Keys a sweep spec may have."""

RESERVED_KEYS = ("name", "config")
"""Keys of a cell or a set of overrides that are not config fields."""

MANIFEST = "sweep.yaml"
"""The sweep folder's list of axes and cells (read by :mod:`fedstale.report`)."""

ERROR_FILE = "error.txt"
"""Written into a cell's folder when it fails."""

SWEEP_ID_VARIABLE = "FEDSTALE_SWEEP_ID"
"""Environment variable marking the processes of a sweep's local Ray instance."""

IGNORED_ON_COMPARE = ("run.output_dir", "run.name")
"""Fields a finished cell may differ in from its spec (the folder may have moved)."""


class SweepError(ValueError):
    """An invalid sweep spec; the message lists every problem, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid sweep:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Axis:
    """One dimension of a sweep.

    Attributes
    ----------
    name : str
        ``cell`` for the explicit cells, ``seed``, a field name or a grid key.
    labels : list[str]
        A label per value (shown in reports; folder names use a safe form).
    values : list[dict]
        The dotted overrides of each value (``config`` may name a base file).
    """

    name: str
    labels: list[str]
    values: list[dict[str, Any]]
    prefix: str = ""
    """Put before the label in a folder name (``""`` for the explicit cells)."""


@dataclass
class SweepSpec:
    """A parsed sweep spec (see the module docstring)."""

    name: str
    config: str
    overrides: dict[str, Any]
    axes: list[Axis]
    seeds: list[int] | None
    seed_data: bool
    engine: str
    source: Path


@dataclass
class Cell:
    """One run of a sweep: its folder name, labels, config file and overrides."""

    name: str
    labels: dict[str, str]
    config_path: Path
    overrides: dict[str, Any]
    seed: int | None
    run_dir: Path


@dataclass
class CellOutcome:
    """What running one cell gave."""

    name: str
    ok: bool
    wall: float
    error: str = ""


# --------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec file (structure only; see :func:`plan_sweep`).

    Raises
    ------
    SweepError
        Listing every problem of the file.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError([f"spec: file '{path}' not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SweepError([f"spec: '{path}' is not valid YAML: {err}"]) from err
    if not isinstance(data, dict):
        raise SweepError([f"spec: '{path}' must hold a mapping with keys {', '.join(SPEC_KEYS)}"])
    problems = [
        f"{key}: unknown key of a sweep spec (keys: {', '.join(SPEC_KEYS)})"
        for key in data
        if key not in SPEC_KEYS
    ]
    if "config" not in data or not isinstance(data["config"], str):
        problems.append("config: the base experiment file is required, e.g. config: configs/default.yaml")
    engine = data.get("engine", "local")
    if engine not in ENGINES:
        problems.append(f"engine: '{engine}' is not one of {', '.join(ENGINES)}")
    overrides = flatten(_mapping(data.get("overrides") or {}, "overrides", problems))
    axes: list[Axis] = []
    cells = data.get("cells") or []
    if not isinstance(cells, list):
        problems.append("cells: must be a list of mappings of overrides")
    elif cells:
        axes.append(_override_axis("cell", "", cells, "cells", problems))
    grid = _mapping(data.get("grid") or {}, "grid", problems)
    for key, values in grid.items():
        axes.append(_grid_axis(str(key), values, problems))
    seeds = data.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        problems.append(f"seeds: must be a list of distinct integers >= 0, got {seeds!r}")
    seed_data = data.get("seed_data", False)
    if not isinstance(seed_data, bool):
        problems.append(f"seed_data: expected true or false, got {seed_data!r}")
    if problems:
        raise SweepError(problems)
    return SweepSpec(
        name=str(data.get("name") or path.stem),
        config=data["config"],
        overrides=overrides,
        axes=axes,
        seeds=seeds,
        seed_data=seed_data,
        engine=engine,
        source=path.resolve(),
    )


def _mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """``value`` if it is a mapping, else ``{}`` and a problem."""
    if isinstance(value, dict):
        return dict(value)
    problems.append(f"{where}: must be a mapping, got {value!r}")
    return {}


def _override_axis(name: str, prefix: str, values: list[Any], where: str, problems: list[str]) -> Axis:
    """An axis whose values are sets of overrides (each with an optional ``name``)."""
    sets = []
    for i, value in enumerate(values):
        if not isinstance(value, dict):
            problems.append(f"{where}[{i}]: must be a mapping of overrides, got {value!r}")
            continue
        flat = flatten({k: v for k, v in value.items() if k != "config"})
        if "config" in value:
            flat["config"] = value["config"]
        sets.append(flat)
    labels = _labels(sets)
    values_out = [{k: v for k, v in s.items() if k != "name"} for s in sets]
    return Axis(name, labels, values_out, prefix)


def _grid_axis(key: str, values: Any, problems: list[str]) -> Axis:
    if not isinstance(values, list) or not values:
        problems.append(f"grid.{key}: must be a non-empty list of values")
        return Axis(key, [], [])
    if all(isinstance(v, dict) for v in values):
        return _override_axis(key, key, values, f"grid.{key}", problems)
    if any(isinstance(v, (dict, list)) for v in values):
        problems.append(f"grid.{key}: values must all be plain values or all mappings of overrides")
        return Axis(key, [], [])
    if key not in schema_fields():
        problems.append(
            f"grid.{key}: unknown field (a grid key with plain values must be a config "
            "field; for sets of overrides give mappings)"
        )
    return Axis(key, [str(v) for v in values], [{key: v} for v in values], _short(key))


def _labels(sets: list[dict[str, Any]]) -> list[str]:
    """Each set's ``name``, else its varied fields as ``field=value``."""
    varied = [k for k in dict.fromkeys(k for s in sets for k in s) if len({repr(s.get(k)) for s in sets}) > 1]
    labels = []
    for s in sets:
        if "name" in s:
            labels.append(str(s["name"]))
        else:
            parts = [f"{_short(k)}={s[k]}" for k in varied if k in s and k != "name"]
            labels.append(",".join(parts) or "base")
    return labels


def _short(key: str) -> str:
    """``strategy.buffer_size`` → ``buffer_size``; ``attack.name`` → ``attack``."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def safe_name(label: str) -> str:
    """A label as a folder-name part: runs of other characters than ``A-Za-z0-9._+-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._+]+", "-", label).strip("-") or "x"


# --------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------


def plan_sweep(spec: SweepSpec, out_dir: Path, cwd: Path | None = None) -> list[Cell]:
    """The cells of ``spec``, each validated with :func:`~fedstale.config.load_config`.

    Raises
    ------
    SweepError
        Listing every cell whose configuration is invalid, every field set by
        two axes, and folder names that collide.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    out_dir = Path(out_dir).resolve()
    axes = list(spec.axes)
    if spec.seeds is not None:
        axes.append(
            Axis("seed", [str(s) for s in spec.seeds], [_seed_overrides(s, spec.seed_data) for s in spec.seeds], "seed")
        )
    varied = [a for a in axes if len(a.values) > 1 or a.name == "seed"]
    problems: list[str] = []
    cells: list[Cell] = []
    for combo in itertools.product(*(range(len(a.values)) for a in axes)):
        overrides = dict(spec.overrides)
        config_name = spec.config
        setter: dict[str, str] = {}
        for axis, index in zip(axes, combo):
            for key, value in axis.values[index].items():
                if key == "config":
                    config_name = str(value)
                    continue
                if key in setter and setter[key] != axis.name:
                    problems.append(f"{key}: set by both {setter[key]} and {axis.name}; set it in one place")
                setter[key] = axis.name
                overrides[key] = value
        labels = {a.name: a.labels[i] for a, i in zip(axes, combo)}
        parts = [
            f"{a.prefix}-{safe_name(a.labels[i])}" if a.prefix else safe_name(a.labels[i])
            for a, i in zip(axes, combo)
            if a in varied
        ]
        name = "_".join(parts) or "run"
        path = resolve_config_path(config_name, [cwd, spec.source.parent, APP_DIR])
        seed = spec.seeds[combo[-1]] if spec.seeds is not None else None
        overrides.update({"run.output_dir": str(out_dir), "run.name": name})
        cells.append(Cell(name, labels, path.resolve(), overrides, seed, out_dir / name))
    seen: dict[str, int] = {}
    for cell in cells:
        seen[cell.name] = seen.get(cell.name, 0) + 1
    problems += [f"cell {n}: {k} cells get this folder name; give the values distinct names" for n, k in seen.items() if k > 1]
    for cell in cells:
        try:
            load_config(cell.config_path, cell.overrides)
        except ConfigError as err:
            problems += [f"cell {cell.name}: {p}" for p in err.problems]
    if problems:
        raise SweepError(list(dict.fromkeys(problems)))
    return cells


def _seed_overrides(seed: int, seed_data: bool) -> dict[str, Any]:
    return {"run.seed": seed, **({"data.seed": seed} if seed_data else {})}


def write_manifest(spec: SweepSpec, cells: list[Cell], out_dir: Path) -> Path:
    """Write ``<out_dir>/sweep.yaml``: the spec's source, axes and cells."""
    axes = [{"name": a.name, "prefix": a.prefix, "labels": a.labels} for a in spec.axes if len(a.values) > 1]
    manifest = {
        "name": spec.name,
        "spec": str(spec.source),
        "axes": axes,
        "seeds": spec.seeds,
        "cells": [
            {"name": c.name, "labels": c.labels, "seed": c.seed, "config": str(c.config_path), "overrides": c.overrides}
            for c in cells
        ],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path


def read_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    """The ``sweep.yaml`` of a sweep folder, or None if it is none."""
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------
# State of a cell
# --------------------------------------------------------------------------


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run: ``model.pt`` and a ``metrics.csv`` row."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.pt").is_file() or not (run_dir / "metrics.csv").is_file():
        return False
    return len(read_csv(run_dir / "metrics.csv")) > 0


def config_differences(cell: Cell) -> list[str]:
    """Fields of a finished cell's ``config.yaml`` that differ from its spec."""
    saved = yaml.safe_load((cell.run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    expected = flatten(to_dict(load_config(cell.config_path, cell.overrides)))
    found = flatten(saved)
    return [
        k
        for k in sorted(set(found) | set(expected))
        if k not in IGNORED_ON_COMPARE and found.get(k) != expected.get(k)
    ]


def split_cells(cells: list[Cell]) -> tuple[list[Cell], list[Cell], list[Cell]]:
    """(finished, interrupted, new) cells.

    Raises
    ------
    SweepError
        If a finished cell ran with another configuration than the spec gives now.
    """
    finished, interrupted, new, problems = [], [], [], []
    for cell in cells:
        if is_finished(cell.run_dir):
            differ = config_differences(cell)
            if differ:
                problems.append(
                    f"cell {cell.name}: finished with another configuration ({', '.join(differ[:5])}); "
                    "remove its folder or choose another output folder"
                )
            finished.append(cell)
        elif cell.run_dir.exists():
            interrupted.append(cell)
        else:
            new.append(cell)
    if problems:
        raise SweepError(problems)
    return finished, interrupted, new


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


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
    package_root = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    sweep_id = os.environ.setdefault(SWEEP_ID_VARIABLE, uuid.uuid4().hex)
    temp_dir, saved_path = None, os.environ.get("PYTHONPATH")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        # a private instance (never one that `ray start` recorded); its socket
        # paths must stay under 107 bytes, hence a short /tmp folder
        temp_dir = tempfile.mkdtemp(prefix="fedstale-ray-", dir="/tmp")
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
            stop_all(lambda: pids_with_env(SWEEP_ID_VARIABLE, sweep_id))
            shutil.rmtree(temp_dir, ignore_errors=True)
