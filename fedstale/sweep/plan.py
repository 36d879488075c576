"""Planning a sweep's cells, its manifest, and the state of each cell's folder."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, flatten, load_config, resolve_config_path, to_dict
from ..results import read_csv
from ..runner import APP_DIR
from .spec import IGNORED_ON_COMPARE, MANIFEST, Axis, SweepError, SweepSpec, safe_name


@dataclass
class Cell:
    """One run of a sweep: its folder name, labels, config file and overrides."""

    name: str
    labels: dict[str, str]
    config_path: Path
    overrides: dict[str, Any]
    seed: int | None
    run_dir: Path





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


