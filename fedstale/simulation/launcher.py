"""Run ``flwr run`` against a private local SuperLink, and stop it afterwards.

``flwr run .`` starts a detached local SuperLink that outlives the run (and
Ray workers under it). Tests and benchmarks must not leave such processes
behind, nor share one with the user's own runs. :class:`LocalFederation`
gives each use its own ``FLWR_HOME`` and free ports (Flower reads
``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` and ``FLWR_LOCAL_CONTROL_API_PORT``),
runs ``flwr run`` exactly as a user would, and on exit kills, by PID, every
process whose command line names its ``FLWR_HOME`` (the SuperLink and its
process group).

Example::

    with LocalFederation(tmp_path) as fed:
        proc = fed.run(".", {"stop.num_updates": 20}, federation_config="num-supernodes=3")
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from ..app_files import stage_app
from ..processes import free_port, pids_with_flwr_home, stop_all
from .local_superlink import ensure_local_superlink

__all__ = [
    "FlwrRunError",
    "LocalFederation",
    "RAY_DID_NOT_START",
    "format_run_config",
    "free_port",
    "raise_if_failed",
    "ray_did_not_start",
    "run_failed",
    "run_folder",
]

RAY_DID_NOT_START = (
    # ray/_private/node.py: the new raylet did not register with the GCS
    # within 30 s, a wait Ray hard-codes (raylet_start_wait_time_s).
    "The current node timed out during startup",
    # ray/_private/node.py: the GCS of a new Ray instance did not answer.
    "Failed to start GCS",
)
"""Ray's messages for a private Ray instance that failed to start: on a
loaded machine (the test suite's workers all starting runs) its daemons can
miss Ray's fixed startup deadlines. The run never reached a ClientApp."""

_RUN_FOLDER = re.compile(r"\[LOG\] experiment .* -> (?P<folder>\S+)(?P<resumed> \(resumed at version \d+\))?$")
"""The ServerApp's first line (:func:`fedstale.server_app.run_experiment`):
it names the run folder, and says when the run was resumed."""


def run_folder(output_dir: Path, log: str) -> Path:
    """The one run folder a ``flwr run`` wrote under ``output_dir`` (its ``run.output_dir``).

    Raises
    ------
    RuntimeError
        If there is not exactly one folder with a ``metrics.csv``; the
        message ends with the run's output (``log``).
    """
    found = sorted(Path(output_dir).glob("*/metrics.csv"))
    if len(found) != 1:
        raise RuntimeError(f"flwr run wrote {len(found)} metrics.csv; output:\n{log[-3000:]}")
    return found[0].parent


def format_run_config(values: dict[str, Any]) -> str:
    """``{"a.b": 1, "c": "x"}`` → ``a.b=1 c='x'`` (TOML values for ``--run-config``)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = "'" + value.replace("'", "") + "'"
        else:
            text = repr(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class LocalFederation:
    """A private ``FLWR_HOME`` and ports for ``flwr run``; cleans up on exit.

    Parameters
    ----------
    workdir : Path
        Holds ``flwr-home/`` (Flower's state) for this federation.
    env : dict | None
        Extra environment variables for ``flwr run`` (and so for the
        SuperLink and the Ray workers it starts).
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.flwr_home = (Path(workdir) / "flwr-home").resolve()
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self._apps = self.flwr_home.parent / "apps"  # staged app folders (fedstale.app_files)
        # Ray's socket paths must fit in 107 bytes, so its private folder
        # has to be short: /tmp/fedstale-ray-XXXXXXXX.
        self.ray_tmpdir = Path(tempfile.mkdtemp(prefix="fedstale-ray-", dir="/tmp"))
        bin_dir = str(Path(sys.executable).parent)
        self.env = dict(os.environ)
        self.env.update(
            {
                "FLWR_HOME": str(self.flwr_home),
                "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
                "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "RAY_TMPDIR": str(self.ray_tmpdir),
                "PATH": bin_dir + os.pathsep + self.env.get("PATH", ""),
            }
        )
        self.env.update(env or {})
        self.flwr = str(Path(bin_dir) / "flwr")

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # pylint: disable=too-many-arguments
    def run(
        self,
        app_dir: str | Path,
        run_config: dict[str, Any] | None = None,
        *,
        federation_config: str | None = None,
        timeout: float = 900,
        cwd: str | Path | None = None,
        check: bool = False,
        ray_retries: int = 1,
    ) -> subprocess.CompletedProcess[str]:
        """``flwr run APP_DIR --stream`` with the given configs; waits for the end.

        The local SuperLink is started in ``cwd`` (default: ``app_dir``),
        which is where relative results folders land, by
        :func:`~fedstale.simulation.local_superlink.ensure_local_superlink`
        with Flower's own command, before ``flwr run``: Flower would kill a
        SuperLink slower than 15 s to start, and one killed while it creates
        its database leaves every later run of this ``FLWR_HOME`` failing. With
        ``check``, a failed run raises :class:`FlwrRunError`. ``flwr run`` is
        given a staged copy of the app's FAB files
        (:func:`fedstale.app_files.stage_app`): the same FAB, built without
        walking ``app_dir``'s ``.venv``.

        A run whose private Ray instance did not start
        (:func:`ray_did_not_start`) is run again, up to ``ray_retries``
        times, with a :class:`RuntimeWarning` that quotes Ray; the folder
        the failed attempt had opened for a new run is removed first, so the
        run's results are those of one whole run. Any other failure is
        returned (or raised) as it is.
        """
        ensure_local_superlink(self.env, cwd or app_dir)
        command = [self.flwr, "run", str(stage_app(app_dir, self._apps)), "--stream"]
        if run_config:
            command += ["--run-config", format_run_config(run_config)]
        if federation_config:
            command += ["--federation-config", federation_config]
        for attempt in range(ray_retries + 1):
            proc = subprocess.run(
                command,
                cwd=str(cwd or app_dir),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            ray_message = ray_did_not_start(proc)
            if ray_message is None or attempt == ray_retries:
                break
            folder = _new_run_folder(proc)
            warnings.warn(
                f"flwr run: Ray did not start ({ray_message}); running it again"
                + ("" if folder is None else f" after removing {folder}, which it had opened"),
                RuntimeWarning,
                stacklevel=2,
            )
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if check:
            raise_if_failed(proc)
        return proc

    def processes(self) -> list[int]:
        """PIDs of processes started for this federation (by their ``FLWR_HOME``)."""
        return pids_with_flwr_home(str(self.flwr_home))

    def stop(self, grace: float = 5.0) -> None:
        """Kill this federation's SuperLink and everything in its process group;
        remove Ray's folder and the staged app folders."""
        stop_all(self.processes, grace)
        shutil.rmtree(self.ray_tmpdir, ignore_errors=True)
        shutil.rmtree(self._apps, ignore_errors=True)


class FlwrRunError(RuntimeError):
    """``flwr run`` ended without running the app to completion."""


def run_failed(proc: subprocess.CompletedProcess[str]) -> str | None:
    """Why a ``flwr run --stream`` failed, or None if it did not.

    ``flwr run --stream`` exits with 0 even when the simulation crashed; the
    crash shows in its output as Flower's ``Exit Code: <n>`` line.
    """
    if proc.returncode != 0:
        return f"exit status {proc.returncode}"
    for line in (proc.stdout + proc.stderr).splitlines():
        if "Exit Code:" in line:
            return line.strip()
    return None


def ray_did_not_start(proc: subprocess.CompletedProcess[str]) -> str | None:
    """Ray's line saying its private instance did not start, if the run
    failed (:func:`run_failed`) with one of :data:`RAY_DID_NOT_START`."""
    if run_failed(proc) is None:
        return None
    for line in (proc.stdout + proc.stderr).splitlines():
        if any(message in line for message in RAY_DID_NOT_START):
            return line.strip()
    return None


def _new_run_folder(proc: subprocess.CompletedProcess[str]) -> Path | None:
    """The folder a run's ServerApp opened for a new run (None: none, or a
    resumed run's folder, which holds earlier results)."""
    for line in proc.stdout.splitlines():
        match = _RUN_FOLDER.search(line.strip())
        if match:
            return None if match["resumed"] else Path(match["folder"])
    return None


def raise_if_failed(proc: subprocess.CompletedProcess[str], logs: str | None = None) -> None:
    """Raise :class:`FlwrRunError` with the run's output (and ``logs``) if it failed.

    Raises
    ------
    FlwrRunError
        If :func:`run_failed` finds a reason.
    """
    reason = run_failed(proc)
    if reason:
        message = f"flwr run failed ({reason}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        raise FlwrRunError(message if logs is None else message + "\n" + logs)
