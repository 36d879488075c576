"""Experiment tracking: send a run's config, metrics and files to TensorBoard or MLflow.

A tracker has four methods: ``log_config(dict)``, ``log_metrics(row, step)``,
``log_artifacts(dir)`` and ``close()``. :data:`TRACKERS` maps the names of
``output.tracker`` (``none``, ``tensorboard``, ``mlflow``) to them;
:func:`make_tracker` builds one for a run folder. Each tracker imports its
library when it is built, so neither is needed for a run without tracking
(``pip install 'fedstale[tensorboard]'`` or ``'fedstale[mlflow]'``).

Two ways to feed a tracker:

- live: :class:`TrackingRecorder` wraps a :class:`fedstale.results.RunRecorder`
  and forwards every row it writes (``metrics.csv`` rows become metrics at
  step ``version``);
- afterwards: :func:`replay_run` reads a finished run folder's
  ``config.yaml`` and ``metrics.csv`` (what ``fedstale run --engine flower``
  and ``fedstale sweep`` do, so that parallel cells never write to one
  tracking store at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml
from flwr.app import ArrayRecord

from .config import flatten
from .results import read_csv

DEFAULT_MLFLOW_DB = "mlflow.db"
"""MLflow's default store: a SQLite file in the working directory..."""

DEFAULT_MLFLOW_ARTIFACTS = "mlruns"
"""...with the artifacts in this folder beside it."""

MLFLOW_EXPERIMENT = "fedstale"
"""MLflow experiment the runs are logged under (unless given)."""


class Tracker(Protocol):
    """What a tracking backend offers."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the resolved configuration (nested sections)."""

    def log_metrics(self, row: Mapping[str, Any], step: int) -> None:
        """Record the numeric values of one ``metrics.csv`` row at ``step``."""

    def log_artifacts(self, directory: Path) -> None:
        """Record the files of a finished run folder."""

    def close(self) -> None:
        """Flush and end the run."""


def numeric_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of a CSV row (empty cells and text dropped; ``version`` kept)."""
    out = {}
    for key, value in row.items():
        if value is None or value == "" or isinstance(value, bool):
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class TensorBoardTracker:
    """Writes TensorBoard event files into ``log_dir``.

    Parameters
    ----------
    log_dir : Path
        Folder of the event files (``<run_dir>/tensorboard`` by
        :func:`make_tracker`); ``tensorboard --logdir results`` shows every run.

    Notes
    -----
    The configuration is a text summary (``config``, YAML); each metric is a
    scalar ``metrics/<column>`` against the model version; ``log_artifacts``
    adds the run's PNG plots as images.
    """

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel
        except ImportError as err:  # torch's writer needs the tensorboard package
            raise ImportError(
                "output.tracker: tensorboard needs the tensorboard package; "
                "pip install 'fedstale[tensorboard]'"
            ) from err
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Add the configuration as a YAML text summary."""
        text = yaml.safe_dump(dict(config), sort_keys=False)
        self._writer.add_text("config", "```\n" + text + "```", 0)

    def log_metrics(self, row: Mapping[str, Any], step: int) -> None:
        """Add one scalar per numeric column, at ``step``."""
        for key, value in numeric_metrics(row).items():
            self._writer.add_scalar(f"metrics/{key}", value, step)
        self._writer.flush()

    def log_artifacts(self, directory: Path) -> None:
        """Add the PNG plots under ``directory/plots`` as images."""
        import matplotlib.image  # pylint: disable=import-outside-toplevel

        for path in sorted((Path(directory) / "plots").glob("*.png")):
            image = matplotlib.image.imread(str(path))[..., :3]
            self._writer.add_image(f"plots/{path.stem}", image, 0, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


class MlflowTracker:
    """Logs a run to MLflow: parameters, metrics per version, run files.

    Parameters
    ----------
    tracking_uri : str | None
        MLflow tracking URI (a server, ``sqlite:///...``, ...). None: a SQLite
        store ``./mlflow.db`` in the working directory, artifacts in ``./mlruns``.
    run_name : str
        Name of the MLflow run (the run folder's name).
    experiment : str (default: "fedstale")
        MLflow experiment, created if missing.
    """

    def __init__(
        self, tracking_uri: str | None, run_name: str, experiment: str = MLFLOW_EXPERIMENT
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient  # pylint: disable=import-outside-toplevel
        except ImportError as err:
            raise ImportError(
                "output.tracker: mlflow needs the mlflow package; pip install 'fedstale[mlflow]'"
            ) from err
        artifacts = None
        if not tracking_uri:
            tracking_uri = mlflow_default_uri()
            artifacts = (Path.cwd().resolve() / DEFAULT_MLFLOW_ARTIFACTS).as_uri()
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self._client.create_experiment(experiment, artifact_location=artifacts)
        )
        self.run_id: str = self._client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Log every field as a parameter, by its dotted name."""
        from mlflow.entities import Param  # pylint: disable=import-outside-toplevel

        params = [Param(k, str(v)[:6000]) for k, v in flatten(dict(config)).items()]
        for start in range(0, len(params), 100):  # MLflow's batch limit
            self._client.log_batch(self.run_id, params=params[start : start + 100])

    def log_metrics(self, row: Mapping[str, Any], step: int) -> None:
        """Log the numeric columns of ``row`` at ``step``."""
        from mlflow.entities import Metric  # pylint: disable=import-outside-toplevel

        stamp = _now_ms()
        metrics = [Metric(k, v, stamp, step) for k, v in numeric_metrics(row).items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def log_artifacts(self, directory: Path) -> None:
        """Upload the run folder's CSVs, config and plots (not the checkpoints)."""
        directory = Path(directory)
        for path in sorted(directory.glob("*.csv")) + sorted(directory.glob("*.yaml")):
            self._client.log_artifact(self.run_id, str(path))
        if (directory / "plots").is_dir():
            self._client.log_artifacts(self.run_id, str(directory / "plots"), "plots")

    def close(self) -> None:
        """Mark the MLflow run finished."""
        self._client.set_terminated(self.run_id)


def _now_ms() -> int:
    return int(time.time() * 1000)


TRACKERS: dict[str, Callable[[Path, str | None], Tracker] | None] = {
    "none": None,
    "tensorboard": lambda run_dir, _uri: TensorBoardTracker(Path(run_dir) / "tensorboard"),
    "mlflow": lambda run_dir, uri: MlflowTracker(uri, Path(run_dir).name),
}
"""``output.tracker`` name → builder ``(run_dir, tracking_uri) -> Tracker`` (none: no tracker)."""


def make_tracker(name: str, run_dir: Path, tracking_uri: str | None = None) -> Tracker | None:
    """The tracker ``name`` for the run in ``run_dir`` (None for ``none``).

    ``name`` comes from a validated config (``output.tracker``, whose check
    also makes sure the tracker's package is installed).

    Raises
    ------
    ValueError
        If ``name`` is not a key of :data:`TRACKERS`.
    """
    if name not in TRACKERS:
        raise ValueError(f"output.tracker: '{name}' is not one of {', '.join(TRACKERS)}")
    builder = TRACKERS[name]
    return None if builder is None else builder(Path(run_dir), tracking_uri)


class TrackingRecorder:
    """A :class:`fedstale.results.RunRecorder` that also feeds a tracker.

    Every call is forwarded to ``recorder``; evaluation rows also go to
    ``tracker.log_metrics`` (step: the row's ``version``), and ``finish``
    logs the run folder's files and closes the tracker.

    Parameters
    ----------
    recorder : RunRecorder
        The recorder writing the run folder.
    tracker : Tracker
        Where the metrics go as well; its ``log_config`` gets the resolved
        configuration at once.
    """

    def __init__(self, recorder: Any, tracker: Tracker) -> None:
        self.recorder = recorder
        self.tracker = tracker
        self.run_dir: Path = recorder.run_dir
        tracker.log_config(recorder.resolved_config)

    def on_update(self, row: dict[str, Any]) -> None:
        """Forward a ``clients.csv`` row."""
        self.recorder.on_update(row)

    def on_evaluate(self, row: dict[str, Any]) -> None:
        """Forward a ``metrics.csv`` row and log it at step ``version``."""
        self.recorder.on_evaluate(row)
        self.tracker.log_metrics(row, int(row.get("version", 0)))

    def on_client_accuracy(self, rows: list[dict[str, Any]]) -> None:
        """Forward an evaluation's ``client_accuracy.csv`` rows."""
        self.recorder.on_client_accuracy(rows)

    def on_target(self, row: dict[str, Any]) -> None:
        """Forward a ``targets.csv`` row."""
        self.recorder.on_target(row)

    def on_model(self, version: int, get_arrays: Callable[[], ArrayRecord]) -> None:
        """Forward a model version."""
        self.recorder.on_model(version, get_arrays)

    def on_resume_point(
        self, version: int, get_state: Callable[[], dict[str, Any]], force: bool = False
    ) -> None:
        """Forward a resume point."""
        self.recorder.on_resume_point(version, get_state, force)

    def finish(self, arrays: ArrayRecord, plots: bool = True) -> None:
        """Finish the run folder, then log its files and close the tracker."""
        self.recorder.finish(arrays, plots=plots)
        self.tracker.log_artifacts(self.run_dir)
        self.tracker.close()


def replay_run(run_dir: Path, tracker: Tracker) -> int:
    """Log a finished run folder to ``tracker``: config, every metrics row, files.

    Returns
    -------
    int
        Number of metrics rows logged.
    """
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    tracker.log_config(config)
    rows = read_csv(run_dir / "metrics.csv")
    for row in rows:
        tracker.log_metrics(row, int(row["version"]))
    tracker.log_artifacts(run_dir)
    tracker.close()
    return len(rows)


def mlflow_default_uri() -> str:
    """The tracking URI :class:`MlflowTracker` uses when none is given."""
    return f"sqlite:///{Path.cwd().resolve() / DEFAULT_MLFLOW_DB}"
