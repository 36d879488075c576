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

import json
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
from ..processes import free_port, pids_using, pids_with_flwr_home, stop_all
from .local_superlink import ensure_local_superlink

__all__ = [
    "FlwrRunError",
    "LocalFederation",
    "RAY_DID_NOT_START",
    "flwr_run_status",
    "format_run_config",
    "free_port",
    "raise_if_failed",
    "ray_did_not_start",
    "run_failed",
    "run_folder",
    "run_id_of",
    "with_run_status",
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


_LOGSTREAM = re.compile(r"Starting logstream for run_id `(?P<run_id>\d+)`")
"""``flwr run --stream``'s first line, naming the run's id."""

FINISHED_MARK = "[LOG] results written to "
"""The fedstale ServerApp's last line (:func:`fedstale.server_app.run_experiment`)."""

STATUS_LINE = "flwr list: run "
"""Start of the line :func:`with_run_status` adds: ``flwr list: run <id> <status> (<details>)``."""

_STATUS = re.compile(re.escape(STATUS_LINE) + r"\d+ (?P<status>\S+)")


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
            proc = with_run_status(proc, [self.flwr], self.env, cwd or app_dir)
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
        """PIDs of processes started for this federation: by their ``FLWR_HOME``,
        and Ray's by the files they hold in its private folder
        (:func:`~fedstale.processes.pids_using`)."""
        return sorted({*pids_with_flwr_home(str(self.flwr_home)), *pids_using(self.ray_tmpdir)})

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
    crash shows in its output as Flower's ``Exit Code: <n>`` line, or, where
    the stream lost that line, in the run's status that
    :func:`with_run_status` added (``finished:failed``, ``finished:stopped``).
    """
    if proc.returncode != 0:
        return f"exit status {proc.returncode}"
    for line in (proc.stdout + proc.stderr).splitlines():
        if "Exit Code:" in line:
            return line.strip()
        status = _STATUS.match(line)
        if status is not None and status["status"] != "finished:completed":
            return line.strip()
    return None


def run_id_of(proc: subprocess.CompletedProcess[str]) -> int | None:
    """The run id ``flwr run --stream`` printed (``Starting logstream for run_id `N```)."""
    match = _LOGSTREAM.search(proc.stdout + proc.stderr)
    return None if match is None else int(match["run_id"])


def flwr_run_status(
    flwr_args: list[str], run_id: int, env: dict[str, str], cwd: str | Path | None = None
) -> tuple[str, str] | None:
    """Flower's status of run ``run_id`` and its details, from ``flwr list --run-id``.

    ``flwr_args`` is the ``flwr`` executable and, if any, the SuperLink
    connection's name (``[flwr]`` for the default connection). Returns
    ``("finished:failed", "Simulation failed with exception: ...")`` and the
    like, or None when ``flwr list`` did not answer.
    """
    try:
        proc = subprocess.run(
            [*flwr_args[:1], "list", *flwr_args[1:], "--run-id", str(run_id), "--format", "json"],
            cwd=None if cwd is None else str(cwd),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        run = json.loads(proc.stdout)["runs"][0]
        return str(run["status"]), str(run["status-details"])
    except (subprocess.TimeoutExpired, ValueError, KeyError, IndexError, TypeError):
        return None


def with_run_status(
    proc: subprocess.CompletedProcess[str],
    flwr_args: list[str],
    env: dict[str, str],
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``proc``, with Flower's status of its run added where its output cannot tell.

    Flower's SuperLink ends a log stream as soon as the run's status is
    ``finished``, and ``flwr-simulation`` (like ``flwr-serverapp``) waits at
    most 3 s for its last log lines to be uploaded before it sets that
    status (``on_exit`` in ``flwr/simulation/app.py``; ``flush_logs`` in
    ``flwr/supercore/logger.py``). On loaded cores ``flwr run --stream``
    then misses the end of a run's log, ``Exit Code:`` line included, and a
    failed run reads like one that succeeded (seen once in ~30 suite runs:
    a bad-config run). When the output has
    neither that line nor the fedstale ServerApp's last line
    (:data:`FINISHED_MARK`), this asks the SuperLink (``flwr list --run-id``)
    and adds ``flwr list: run <id> <status> (<details>)`` to ``stdout``, which
    :func:`run_failed` reads. Other outputs are returned as they are.
    """
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Exit Code:" in output or FINISHED_MARK in output:
        return proc
    run_id = run_id_of(proc)
    status = None if run_id is None else flwr_run_status(flwr_args, run_id, env, cwd)
    if status is None:
        return proc
    line = f"{STATUS_LINE}{run_id} {status[0]} ({status[1]})\n"
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout + line, proc.stderr)


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
