"""Run one experiment from the command line: in this process, or through ``flwr run``.

Both engines run the same ServerApp code (:func:`fedstale.server_app.run_experiment`)
and write the same run folder:

- ``local``: on a :class:`fedstale.simulation.local_grid.LocalGrid` in this
  process (no SuperLink, no Ray; rows equal those of ``flwr run`` with the
  virtual clock, wall-time columns and ``node`` aside);
- ``flower``: ``flwr run APP_DIR --stream`` with the user's Flower setup
  (their ``FLWR_HOME``, its local SuperLink and Ray), with
  ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``.

:func:`plan_run` fixes the run folder before the run starts: a relative
``run.output_dir`` is resolved against the working directory of the caller
(a plain ``flwr run`` would resolve it in the folder where its local
SuperLink was first started), and ``run.name`` is set to the folder's free
name (``<name>``, ``<name>-2``, ...), so the folder is known in advance.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from .app_files import stage_app
from .config import Config, ConfigError, load_config, resolve_config_path
from .results import unique_run_dir
from .simulation.launcher import format_run_config, run_failed, with_run_status
from .simulation.local_superlink import ensure_default_connection_superlink

ENGINES = ("flower", "local")
"""Names of ``--engine``."""

LOCAL_NODES = 2
"""Nodes of the in-process grid (Flower's default simulation has 2 SuperNodes)."""

APP_DIR = Path(__file__).resolve().parent.parent
"""Where the fedstale Flower app (its ``pyproject.toml``) is, for a source checkout."""


class RunFailed(RuntimeError):
    """A run ended without its results (the message says why)."""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a.b": 1, "c": "x"}`` (values in YAML syntax).

    Raises
    ------
    ConfigError
        If an item is not ``dotted.name=value``.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"override '{item}': must look like dotted.name=value"])
        overrides[key.strip()] = yaml.safe_load(raw)
    return overrides


@dataclass
class RunPlan:
    """One experiment, validated, with its run folder fixed.

    Attributes
    ----------
    config_path : Path
        The YAML experiment (absolute).
    overrides : dict
        The dotted overrides, including the absolute ``run.output_dir`` and
        the ``run.name`` of :attr:`run_dir` (or the absolute ``run.resume``).
    config : Config
        The validated configuration with those overrides.
    run_dir : Path
        The absolute folder the run writes.
    """

    config_path: Path
    overrides: dict[str, Any]
    config: Config
    run_dir: Path


def plan_run(
    config_path: str | Path, overrides: dict[str, Any], cwd: Path | None = None
) -> RunPlan:
    """Validate an experiment and fix its run folder under ``cwd`` (default: the working directory).

    A relative ``config_path`` is looked up in ``cwd``, then in fedstale's
    source checkout (:data:`APP_DIR`, which has ``configs/``).

    Raises
    ------
    ConfigError
        If the configuration is invalid (nothing is written).
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    path = resolve_config_path(str(config_path), [cwd, APP_DIR]).resolve()
    config = load_config(path, overrides)
    fixed = dict(overrides)
    if config.run.resume:
        run_dir = (cwd / config.run.resume).resolve()
        fixed["run.resume"] = str(run_dir)
    else:
        output_dir = (cwd / config.run.output_dir).resolve()
        run_dir = unique_run_dir(output_dir / (config.run.name or path.stem))
        fixed["run.output_dir"] = str(output_dir)
        fixed["run.name"] = run_dir.name
    return RunPlan(path, fixed, load_config(path, fixed), run_dir)


def run_local(plan: RunPlan) -> Path:
    """Run ``plan`` on an in-process grid; return its folder.

    Raises
    ------
    ConfigError
        If the data cannot be partitioned as configured.
    fedstale.strategies.RunAborted
        If the run was stopped (e.g. ``comm.fail_fast``).
    """
    # pylint: disable=import-outside-toplevel
    from .client_app import app as client_app
    from .server_app import run_experiment
    from .simulation.local_grid import LocalGrid

    grid = LocalGrid(client_app, num_nodes=LOCAL_NODES)
    return run_experiment(grid, plan.config, plan.config_path)


def find_app_dir(app_dir: str | Path | None = None) -> Path:
    """The Flower app folder for ``flwr run``: ``app_dir``, else fedstale's source checkout.

    Raises
    ------
    ConfigError
        If the folder has no ``pyproject.toml`` with a ``[tool.flwr.app]`` table.
    """
    folder = Path(app_dir).resolve() if app_dir else APP_DIR
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app" not in pyproject.read_text(encoding="utf-8"):
        raise ConfigError(
            [
                f"--app: '{folder}' is not a Flower app folder (no pyproject.toml with "
                "[tool.flwr.app]); pass --app with fedstale's project folder"
            ]
        )
    return folder


def flwr_executable() -> str:
    """``flwr`` beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "flwr"
    return str(beside) if beside.is_file() else shutil.which("flwr") or "flwr"


def flwr_run_command(plan: RunPlan, app_dir: Path) -> list[str]:
    """The ``flwr run`` command line of ``plan``."""
    values = {"config": str(plan.config_path)}
    values.update({k: "none" if v is None else v for k, v in plan.overrides.items()})
    return [flwr_executable(), "run", str(app_dir), "--stream", "--run-config", format_run_config(values)]


def run_flower(plan: RunPlan, app_dir: Path, log: TextIO | None = None) -> Path:
    """Run ``plan`` with ``flwr run --stream``, echoing its output to ``log``; return its folder.

    ``flwr run --stream`` exits with 0 even when the ServerApp failed, so the
    run counts as failed when its output has Flower's ``Exit Code:`` line, or
    Flower's own status of the run says so where the log stream lost that
    line (:func:`fedstale.simulation.launcher.run_failed`,
    :func:`~fedstale.simulation.launcher.with_run_status`), or ``model.pt``
    is missing.

    Raises
    ------
    RunFailed
        If the run failed.
    """
    log = sys.stderr if log is None else log
    env = dict(os.environ, FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1")
    try:
        # a local connection's SuperLink is started with time to start
        # (fedstale.simulation.local_superlink: Flower kills it after 15 s)
        ensure_default_connection_superlink(env, Path.cwd())
    except RuntimeError as exc:
        raise RunFailed(f"flwr run failed (local SuperLink: {exc})") from exc
    lines: list[str] = []
    # flwr run builds the FAB from a staged copy of its files: the same FAB,
    # without walking the app folder's .venv (fedstale.app_files)
    with tempfile.TemporaryDirectory(prefix="fedstale-app-") as staging, subprocess.Popen(
        flwr_run_command(plan, stage_app(app_dir, staging)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            log.write(line)
            log.flush()
    output = "".join(lines)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, output, "")
    reason = run_failed(with_run_status(done, [flwr_executable()], env, Path.cwd()))
    if reason is None and not (plan.run_dir / "model.pt").is_file():
        reason = f"no model.pt in {plan.run_dir}"
    if reason is not None:
        raise RunFailed(f"flwr run failed ({reason})")
    return plan.run_dir
