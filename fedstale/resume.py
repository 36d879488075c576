"""Resuming a run after the ServerApp stopped: the resume point and its checks.

Every ``output.resume_every`` model versions (and at the last version of
the version budget) the strategy hands the recorder its *run state*
(:meth:`fedstale.strategies.base.AsyncStrategy.run_state`): the global model,
the version counter, every counter behind ``metrics.csv``, the selection
RNG, the virtual clock, the tasks in flight with the model versions they
started from, and the state of trust, filters, reducers, central DP and the
simulated adversary (each through :mod:`fedstale.component_state`).
:class:`fedstale.results.RunRecorder` writes it, with the sizes
``metrics.csv`` and ``clients.csv`` had at that moment, to
``checkpoints/resume.pt`` (write to a temporary file, then rename: a kill
never leaves half a file).

``run.resume: <run folder>`` starts a new Flower run that continues the old
one: the CSV files are cut back to the rows of the resume point (rows
written after it belong to work the state does not hold, and are written
again), the state is loaded, the tasks that were in flight are dispatched
again with their task ids, seeds and base models, and the loop goes on. With
the virtual clock the continued run writes the same rows as a run that was
never interrupted (only the wall-time columns differ), because delivery
order, delays and local training depend only on seeds and task ids.

Client-side state does not survive: a new Flower run gives every SuperNode
a fresh ``Context``, so compression error-feedback residuals restart at zero
and DP-SGD accountants would restart from ε = 0 (``run.resume`` is refused
with ``privacy.local``, and with ``privacy.secagg`` whose groups cannot be
re-masked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

RESUME_FILE = Path("checkpoints") / "resume.pt"
"""Where, in a run folder, the latest resume point is kept."""

RESUME_FORMAT = 1
"""Version of the resume-point layout; a different one is refused."""

MAY_CHANGE_ON_RESUME = ("run.name", "run.output_dir", "run.resume", "stop.", "output.", "comm.")
"""Config fields (names, or prefixes ending in a dot) a resumed run may set
differently: where results go, when to stop, what to write, timeouts.
Everything else (``run.seed`` included) must match, or the continued run
would not be the same experiment."""


@dataclass
class ResumePoint:
    """A saved resume point: the strategy's run state and where the CSVs stood."""

    state: dict[str, Any]
    """:meth:`AsyncStrategy.run_state` at the resume point."""
    csv_sizes: dict[str, int]
    """Bytes of ``metrics.csv`` and ``clients.csv`` at that moment, by file name."""
    config: dict[str, Any]
    """The resolved configuration of the run that wrote it."""


def save_resume_point(run_dir: Path, point: ResumePoint) -> None:
    """Write ``checkpoints/resume.pt`` atomically (temporary file, then rename)."""
    path = run_dir / RESUME_FILE
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(
        {
            "format": RESUME_FORMAT,
            "state": point.state,
            "csv_sizes": point.csv_sizes,
            "config": point.config,
        },
        tmp,
    )
    os.replace(tmp, path)


def load_resume_point(run_dir: Path) -> ResumePoint:
    """Read the resume point of ``run_dir``; one clear error if there is none."""
    if not run_dir.is_dir():
        raise ConfigError(
            [f"run.resume: run folder '{run_dir}' does not exist; give the folder of the "
             "interrupted run (e.g. results/default)"]
        )
    path = run_dir / RESUME_FILE
    if not path.is_file():
        raise ConfigError(
            [f"run.resume: '{run_dir}' has no {RESUME_FILE}; the run was written with "
             "output.resume_every: 0 or stopped before its first resume point"]
        )
    # our own file (written by save_resume_point); it holds NumPy RNG states
    # and plain Python containers, hence weights_only=False
    saved = torch.load(path, weights_only=False)
    if saved.get("format") != RESUME_FORMAT:
        raise ConfigError(
            [f"run.resume: {path} has format {saved.get('format')}, this fedstale reads "
             f"{RESUME_FORMAT}; resume it with the fedstale version that wrote it"]
        )
    return ResumePoint(
        state=saved["state"],
        csv_sizes={name: int(size) for name, size in saved["csv_sizes"].items()},
        config=saved["config"],
    )


def check_same_experiment(saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume with a config that changes the experiment.

    Both are resolved configs (nested dicts). Fields under
    :data:`MAY_CHANGE_ON_RESUME` may differ; every other difference is
    listed, one line each.
    """
    old_flat, new_flat = _flatten(saved), _flatten(new)
    problems = [
        f"{key}: the interrupted run used {old_flat.get(key)!r}, this one {new_flat.get(key)!r};"
        " a resumed run must be the same experiment (only run.name, run.output_dir, stop.*,"
        " output.* and comm.* may change); set it back, or start a new run (run.resume: '')"
        for key in sorted(set(old_flat) | set(new_flat))
        if not key.startswith(MAY_CHANGE_ON_RESUME) and old_flat.get(key) != new_flat.get(key)
    ]
    if problems:
        raise ConfigError(problems)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def cut_back(path: Path, size: int) -> None:
    """Cut a CSV file back to its first ``size`` bytes (the resume point's rows).

    Sizes rather than row counts: a ``reason`` cell may hold a line break.

    Raises
    ------
    ConfigError
        If the file is shorter than that (it was edited or replaced since).
    """
    actual = path.stat().st_size if path.is_file() else -1
    if actual < size:
        raise ConfigError(
            [f"run.resume: {path} holds {max(actual, 0)} bytes but held {size} at the resume "
             "point; it was changed since, so the run cannot be continued consistently"]
        )
    os.truncate(path, size)
