"""Sweep specs: parsing and checking a spec YAML (see :mod:`fedstale.sweep`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import flatten, schema_fields
from ..runner import ENGINES

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


