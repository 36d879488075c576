"""Run outputs: ``results/<run-name>/`` with CSVs, checkpoints, model and plots.

Layout of a run folder:

- ``config.yaml``: the resolved configuration (every field);
- ``metrics.csv``: one row per evaluation (:data:`METRICS_COLUMNS`);
- ``clients.csv``: one row per received update (:data:`CLIENT_COLUMNS`);
- ``client_accuracy.csv``: with ``evaluation.fairness``, one row per client
  per evaluation (:data:`fedstale.fairness.CLIENT_ACCURACY_COLUMNS`);
- ``targets.csv``: with ``evaluation.targets``, one row per target accuracy
  reached, at its first evaluation (:data:`fedstale.fairness.TARGETS_COLUMNS`);
- ``checkpoints/version_<v>.pt``: the global model every
  ``output.checkpoint_every`` versions (a PyTorch ``state_dict``);
- ``checkpoints/resume.pt``: what ``run.resume`` needs to continue the run,
  every ``output.resume_every`` versions (see :mod:`fedstale.resume`);
- ``model.pt``: the final global model (a ``state_dict``);
- ``plots/``: PNG plots (see :mod:`fedstale.plots`).

Rows are flushed as they are written, so a crash loses nothing already
observed; an existing run folder is never overwritten (a new run with the
same name gets ``<name>-2``, ``<name>-3``, ...).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
import yaml
from flwr.app import ArrayRecord

from .fairness import (
    CLIENT_ACCURACY_COLUMNS,
    CLIENT_ACCURACY_FILE,
    SUMMARY_COLUMNS,
    TARGETS_COLUMNS,
    TARGETS_FILE,
)
from .plots import plot_run, read_csv  # noqa: F401  (read_csv: for readers of run folders)
from .resume import ResumePoint, cut_back, save_resume_point

METRICS_COLUMNS = (
    "version",
    "virtual_time",
    "wall_time",
    "updates",
    "accepted",
    "dropped",
    "rejected",
    "failures",
    "quarantined",
    "mean_staleness",
    "accuracy",
    "loss",
    "attack_success",
    "fed_accuracy",
    "fed_loss",
    "max_client_epsilon",
    "central_epsilon",
    "bytes_up",
    "bytes_down",
    "compression_ratio",
    *SUMMARY_COLUMNS,
)
"""Columns of ``metrics.csv``. ``updates`` counts every received reply
(accepted, dropped for staleness, rejected by quarantine or a filter, or
failed); ``quarantined`` is the number of clients in quarantine (trust on);
``mean_staleness`` is over the updates accepted since the previous row;
``attack_success`` is the backdoor's success rate on the triggered test set
(backdoor attack only); ``fed_*`` come from federated
evaluation (empty when it is off); ``wall_time`` is seconds since the
strategy started; ``max_client_epsilon`` is the largest DP-SGD ε any client
has spent (``privacy.local``) and ``central_epsilon`` the server's ε over all
noisy aggregations so far (``privacy.central``), both at the configured δ;
``bytes_up``/``bytes_down`` are the bytes of all updates received / models
sent so far and ``compression_ratio`` the dense size of the received updates
divided by their bytes on the wire; ``client_acc_mean``, ``client_acc_std``,
``client_acc_worst10`` and ``client_acc_jain`` summarize the per-client
accuracies of ``client_accuracy.csv`` at this evaluation (mean, population
std, mean of the worst 10 % of clients, Jain's index; empty when
``evaluation.fairness`` is off)."""

CLIENT_COLUMNS = (
    "task_id",
    "client_id",
    "node",
    "dispatch_version",
    "arrival_version",
    "staleness",
    "weight",
    "dispatch_time",
    "arrival_time",
    "virtual_duration",
    "wall_duration",
    "fit_seconds",
    "num_examples",
    "epochs",
    "lr",
    "train_loss",
    "accepted",
    "reason",
    "trust",
    "quarantined",
    "malicious",
    "epsilon",
    "bytes_up",
    "bytes_down",
)
"""Columns of ``clients.csv``. ``node`` is the index of the SuperNode hosting
the client (nodes ordered by ``partition-id``); ``wall_duration`` is the wall
time from push to reply and ``fit_seconds`` the part the client spent in
``fit``; ``weight`` is the weight the
strategy gave the update (FedAsync α·s(τ), FedBuff s(τ), FedAvg n_i/Σn);
``reason`` says why an update was not accepted; ``trust`` is the client's
trust the update was weighted with and ``quarantined`` whether the client is
in quarantine after it (both empty when trust is off); ``malicious`` is the
simulation's ground truth (empty without an attack); ``epsilon`` is the
client's DP-SGD ε after this update (``privacy.local``); ``bytes_up`` and
``bytes_down`` are the bytes of this update's reply and of the model sent."""

OPTIONAL_FILES = {CLIENT_ACCURACY_FILE: CLIENT_ACCURACY_COLUMNS, TARGETS_FILE: TARGETS_COLUMNS}
"""CSV files a run writes only when it has rows for them, with their columns."""

WALL_COLUMNS = ("wall_time", "wall_duration", "fit_seconds")
"""Columns that measure wall time and so differ between identical runs."""


def unique_run_dir(base: Path) -> Path:
    """``base`` if it is free, else the first free ``base-2``, ``base-3``, ..."""
    candidate, suffix = base, 1
    while candidate.exists():
        suffix += 1
        candidate = base.with_name(f"{base.name}-{suffix}")
    return candidate


class _CsvLog:
    """A CSV file written one flushed row at a time (appended to when ``append``)."""

    def __init__(self, path: Path, columns: tuple[str, ...], append: bool = False) -> None:
        self.columns = columns
        self._file: TextIO = path.open("a" if append else "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        if not append:
            self._writer.writeheader()
        self._file.flush()

    def size(self) -> int:
        """Bytes written so far (every row is flushed)."""
        return os.fstat(self._file.fileno()).st_size

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({k: _cell(row.get(k, "")) for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.10g}"
    return value


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class RunRecorder:
    """Writes a run's outputs as the strategy reports them.

    Parameters
    ----------
    run_dir : Path
        The folder to create (see :func:`unique_run_dir`).
    resolved_config : dict
        Written to ``config.yaml``.
    checkpoint_every : int
        Save ``checkpoints/version_<v>.pt`` every this many versions (0: never).
    resume_every : int
        Save ``checkpoints/resume.pt`` every this many versions (0: never);
        see :mod:`fedstale.resume`.
    resume_from : ResumePoint | None
        Continue the run already in ``run_dir`` from this resume point: its
        CSV files are cut back to the point's rows and appended to.
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        run_dir: Path,
        resolved_config: dict[str, Any],
        checkpoint_every: int = 0,
        resume_every: int = 0,
        resume_from: ResumePoint | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.resolved_config = resolved_config
        self.checkpoint_every = checkpoint_every
        self.resume_every = resume_every
        if resume_from is None:
            run_dir.mkdir(parents=True, exist_ok=False)
        else:
            for name, size in resume_from.csv_sizes.items():
                cut_back(run_dir / name, size)
            for name in OPTIONAL_FILES:  # rows written after the resume point only
                if name not in resume_from.csv_sizes and (run_dir / name).is_file():
                    (run_dir / name).unlink()
        config_text = yaml.safe_dump(resolved_config, sort_keys=False)
        _write_atomic(run_dir / "config.yaml", config_text)
        append = resume_from is not None
        self._metrics = _CsvLog(run_dir / "metrics.csv", METRICS_COLUMNS, append)
        self._clients = _CsvLog(run_dir / "clients.csv", CLIENT_COLUMNS, append)
        self._optional: dict[str, _CsvLog] = {}

    def _log(self, name: str) -> _CsvLog:
        """The optional CSV ``name``, opened at its first row (appended to if it exists: resume)."""
        if name not in self._optional:
            path = self.run_dir / name
            self._optional[name] = _CsvLog(path, OPTIONAL_FILES[name], path.is_file())
        return self._optional[name]

    def on_client_accuracy(self, rows: list[dict[str, Any]]) -> None:
        """Append an evaluation's rows to ``client_accuracy.csv``."""
        for row in rows:
            self._log(CLIENT_ACCURACY_FILE).write(row)

    def on_target(self, row: dict[str, Any]) -> None:
        """Append a row to ``targets.csv``."""
        self._log(TARGETS_FILE).write(row)

    def on_update(self, row: dict[str, Any]) -> None:
        """Append a row to ``clients.csv``."""
        self._clients.write(row)

    def on_evaluate(self, row: dict[str, Any]) -> None:
        """Append a row to ``metrics.csv``."""
        self._metrics.write(row)

    def on_model(self, version: int, get_arrays: Callable[[], ArrayRecord]) -> None:
        """Checkpoint every ``checkpoint_every`` versions."""
        if self.checkpoint_every and version % self.checkpoint_every == 0:
            folder = self.run_dir / "checkpoints"
            folder.mkdir(exist_ok=True)
            state = dict(get_arrays().to_torch_state_dict())
            _save_atomic(state, folder / f"version_{version:06d}.pt")

    def on_resume_point(
        self, version: int, get_state: Callable[[], dict[str, Any]], force: bool = False
    ) -> None:
        """Save ``checkpoints/resume.pt`` every ``resume_every`` versions (or when forced)."""
        if not self.resume_every or not (force or version % self.resume_every == 0):
            return
        point = ResumePoint(
            state=get_state(),
            csv_sizes={"metrics.csv": self._metrics.size(), "clients.csv": self._clients.size()}
            | {name: log.size() for name, log in self._optional.items()},
            config=self.resolved_config,
        )
        save_resume_point(self.run_dir, point)

    def finish(self, arrays: ArrayRecord, plots: bool = True) -> None:
        """Save ``model.pt``, close the CSVs and draw the plots."""
        _save_atomic(dict(arrays.to_torch_state_dict()), self.run_dir / "model.pt")
        for log in (self._metrics, self._clients, *self._optional.values()):
            log.close()
        if plots:
            plot_run(self.run_dir)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

