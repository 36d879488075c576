"""Loading run and sweep folders and grouping runs over seeds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import flatten
from ..fairness import CLIENT_ACCURACY_FILE
from ..results import read_csv
from ..sweep import is_finished, read_manifest

SEED_FIELDS = ("run.seed", "data.seed")
"""Fields in which runs of one group may differ."""

NOT_COMPARED = SEED_FIELDS + ("run.name", "run.output_dir", "run.resume")
"""Fields ignored when grouping runs."""




def accuracy_rows(metrics: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The rows of ``metrics.csv`` with an accuracy."""
    return [r for r in metrics if r.get("accuracy", "") != ""]

class ReportError(ValueError):
    """Nothing to report on (the message says what is missing)."""


@dataclass
class RunData:
    """One run folder's files."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, str]]
    clients: list[dict[str, str]]
    labels: dict[str, str] = field(default_factory=dict)
    client_accuracy: list[dict[str, str]] | None = None
    display: str = ""
    """The group label from a sweep's axes (empty: from the folder name)."""

    @property
    def finished(self) -> bool:
        """Whether the run wrote its final model."""
        return (self.path / "model.pt").is_file()


@dataclass
class Group:
    """Runs of one setting, over seeds."""

    label: str
    runs: list[RunData]
    labels: dict[str, str] = field(default_factory=dict)




def load_run(path: Path, labels: dict[str, str] | None = None) -> RunData:
    """Read a run folder."""
    path = Path(path)
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) if (path / "config.yaml").is_file() else {}
    clients = read_csv(path / "clients.csv") if (path / "clients.csv").is_file() else []
    fairness = path / CLIENT_ACCURACY_FILE
    return RunData(
        path,
        flatten(config or {}),
        read_csv(path / "metrics.csv"),
        clients,
        dict(labels or {}),
        read_csv(fairness) if fairness.is_file() else None,
    )


def collect_runs(dirs: Sequence[Path], notes: list[str] | None = None) -> list[RunData]:
    """The runs in ``dirs``: run folders as they are, sweep folders by their finished cells.

    A sweep's cells that have not finished are left out and counted in ``notes``.

    Raises
    ------
    ReportError
        If a folder is neither a run folder nor holds run folders.
    """
    runs: list[RunData] = []
    notes = [] if notes is None else notes
    for folder in map(Path, dirs):
        if (folder / "metrics.csv").is_file():
            runs.append(load_run(folder))
            continue
        manifest = read_manifest(folder)
        if manifest is not None:
            missing = [c["name"] for c in manifest["cells"] if not is_finished(folder / c["name"])]
            if missing:
                notes.append(
                    f"Sweep `{folder}`: {len(missing)} of {len(manifest['cells'])} cells have not "
                    "finished and are left out (`fedstale sweep` again runs them)."
                )
            for cell in manifest["cells"]:
                run_dir = folder / cell["name"]
                if cell["name"] not in missing:
                    labels = {a["name"]: cell["labels"][a["name"]] for a in manifest["axes"]}
                    run = load_run(run_dir, labels)
                    run.display = " / ".join(
                        f"{a.get('prefix') or ''}={labels[a['name']]}".lstrip("=") for a in manifest["axes"]
                    ) or str(manifest["name"])
                    runs.append(run)
            continue
        children = sorted(p for p in folder.glob("*/metrics.csv")) if folder.is_dir() else []
        if not children:
            raise ReportError(
                f"{folder}: not a run folder (no metrics.csv) and no run folders inside"
            )
        runs.extend(load_run(p.parent) for p in children)
    runs = [r for r in runs if accuracy_rows(r.metrics)]
    if not runs:
        raise ReportError("no run with an evaluated accuracy in " + ", ".join(map(str, dirs)))
    return runs


def group_runs(runs: Sequence[RunData]) -> list[Group]:
    """Group runs whose configs are equal but for :data:`NOT_COMPARED` (in order of appearance)."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = repr(sorted((k, repr(v)) for k, v in run.config.items() if k not in NOT_COMPARED))
        if key not in groups:
            groups[key] = Group(_label(run), [], run.labels)
        groups[key].runs.append(run)
    out = list(groups.values())
    seen: dict[str, int] = {}
    for group in out:
        seen[group.label] = seen.get(group.label, 0) + 1
        if seen[group.label] > 1:
            group.label = f"{group.label} ({seen[group.label]})"
    return out


def _label(run: RunData) -> str:
    if run.display:
        return run.display
    name = re.sub(r"(^|_)seed-\d+", "", run.path.name).strip("_")
    return re.sub(r"-\d+$", "", name) if name else run.path.name


