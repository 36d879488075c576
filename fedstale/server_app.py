"""fedstale's ServerApp: read the experiment, run its strategy, write results."""

from __future__ import annotations

import time

IMPORT_STARTED = time.time()
"""Unix time at which this module (and with it fedstale and torch) began to load."""

# pylint: disable=wrong-import-position
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from .builders import build_strategy, check_data, initial_arrays, num_parameters, run_strategy
from .fast_grid import fast_pulls
from .config import (
    Config,
    ConfigError,
    load_config,
    resolve_config_path,
    run_config_overrides,
    to_dict,
)
from .progress import log_line
from .results import RunRecorder, unique_run_dir
from .strategies import RunAborted
from .tracking import TrackingRecorder, make_tracker
from .resume import check_same_experiment, load_resume_point

APP_DIR = Path(__file__).resolve().parent.parent
"""The Flower app's folder (the installed FAB in a run): relative config
paths are looked up here first, then in the working directory."""

app = ServerApp()


def config_from_run(run_config: dict[str, Any], explicit: dict[str, Any]) -> tuple[Config, Path]:
    """The experiment named by a Flower run config, with its overrides applied."""
    path = resolve_config_path(
        str(run_config.get("config", "configs/default.yaml")), [APP_DIR, Path.cwd()]
    )
    overrides = run_config_overrides(dict(run_config), dict(explicit))
    return load_config(path, overrides), path


def open_run(config: Config, config_path: Path) -> tuple[RunRecorder, dict[str, Any] | None]:
    """The run's recorder, and the run state to continue from (``run.resume``).

    A new run gets a new folder ``<output_dir>/<name>`` (``-2``, ``-3``...
    if taken). A resumed run reopens the folder ``run.resume`` names, after
    checking it is the same experiment (:func:`fedstale.resume.check_same_experiment`).

    Raises
    ------
    ConfigError
        If the run to resume has no resume point or another configuration.
    """
    resolved = to_dict(config)
    if config.run.resume:
        run_dir = Path(config.run.resume).resolve()
        point = load_resume_point(run_dir)
        resolved["run"]["name"] = run_dir.name
        check_same_experiment(point.config, resolved)
        recorder = RunRecorder(
            run_dir,
            resolved,
            config.output.checkpoint_every,
            config.output.resume_every,
            resume_from=point,
        )
        return recorder, point.state
    name = config.run.name or config_path.stem
    run_dir = unique_run_dir(Path(config.run.output_dir).resolve() / name)
    resolved["run"]["name"] = run_dir.name
    recorder = RunRecorder(
        run_dir, resolved, config.output.checkpoint_every, config.output.resume_every
    )
    return recorder, None


def run_experiment(grid: Grid, config: Config, config_path: Path) -> Path:
    """Run (or, with ``run.resume``, continue) one experiment on ``grid``; return its folder.

    With ``output.tracker`` (and ``output.tracking_uri``) the run also goes to
    TensorBoard or MLflow as it is written (:mod:`fedstale.tracking`).
    """
    check_data(config)
    recorder, resume = open_run(config, config_path)
    tracking = make_tracker(config.output.tracker, recorder.run_dir, config.output.tracking_uri or None)
    if tracking is not None:
        recorder = TrackingRecorder(recorder, tracking)  # type: ignore[assignment]
    arrays = initial_arrays(config)
    log_line(
        "experiment '%s': %s %s, %d clients, C=%d, %s model (%d parameters) -> %s%s",
        config_path,
        config.strategy.name,
        config.strategy.resolved_mode(),
        config.data.num_clients,
        config.strategy.concurrency,
        config.model.name,
        num_parameters(arrays),
        recorder.run_dir,
        "" if resume is None else f" (resumed at version {resume['version']})",
    )
    strategy = build_strategy(config, recorder)
    result = run_strategy(strategy, grid, config, arrays, resume=resume)
    recorder.finish(result.arrays, plots=config.output.plots)
    log_line("results written to %s", recorder.run_dir)
    return recorder.run_dir


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run``."""
    entered = time.time()
    log_line(
        "start-up: ServerApp imported in %.2fs, main() entered at Unix time %.3f",
        entered - IMPORT_STARTED,
        entered,
    )
    try:
        config, path = config_from_run(context.run_config, grid.run.override_config)
        run_experiment(fast_pulls(grid), config, path)
    except (ConfigError, RunAborted) as err:
        # one clear line in the run's log; re-raised so that Flower marks
        # the run failed (`flwr list` shows it; `flwr run` exits 0 anyway)
        log_line("%s", err, warning=True)
        raise
