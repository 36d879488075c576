"""fedstale's ServerApp: read the experiment, run its strategy, write results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from .builders import build_strategy, initial_arrays, num_parameters, run_strategy
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


def run_experiment(grid: Grid, config: Config, config_path: Path) -> Path:
    """Run one experiment on ``grid``; return its results folder."""
    name = config.run.name or config_path.stem
    run_dir = unique_run_dir(Path(config.run.output_dir).resolve() / name)
    resolved = to_dict(config)
    resolved["run"]["name"] = run_dir.name
    recorder = RunRecorder(run_dir, resolved, config.output.checkpoint_every)
    arrays = initial_arrays(config)
    log_line(
        "experiment '%s': %s %s, %d clients, C=%d, %s model (%d parameters) -> %s",
        config_path,
        config.strategy.name,
        config.strategy.resolved_mode(),
        config.data.num_clients,
        config.strategy.concurrency,
        config.model.name,
        num_parameters(arrays),
        run_dir,
    )
    result = run_strategy(build_strategy(config, recorder), grid, config, arrays)
    recorder.finish(result.arrays, plots=config.output.plots)
    log_line("results written to %s", run_dir)
    return run_dir


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run``."""
    try:
        config, path = config_from_run(context.run_config, grid.run.override_config)
    except ConfigError as err:
        log_line("%s", err, warning=True)
        raise
    run_experiment(grid, config, path)
