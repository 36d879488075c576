"""A SuperLink and SuperNodes on 127.0.0.1 (see :mod:`fedstale.deployment`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..app_files import stage_app
from ..certificates import Credentials
from ..processes import free_port, pids_with_flwr_home, stop_all, stop_processes
from ..simulation.launcher import FlwrRunError, raise_if_failed, with_run_status
from .commands import FEDERATION, SUPEREXECS, CommandLines
from .nodes import DeploymentError, SuperNodeControl, wait_for_port


class LocalDeployment(SuperNodeControl):
    """A SuperLink and SuperNodes on 127.0.0.1; stops them all on exit.

    Parameters
    ----------
    workdir : Path
        Holds ``flwr-home/`` (Flower's state and ``config.toml``),
        ``superlink/`` (the SuperLink's working directory, where a relative
        ``run.output_dir`` lands) and ``logs/``.
    credentials : Credentials | None
        TLS files (and SuperNode keys); ``None`` runs everything with
        ``--insecure``.
    supernode_auth : bool
        Start the SuperLink with ``--enable-supernode-auth``: only SuperNodes
        registered with :meth:`register_supernode` may connect. Needs TLS.
    superexec : str
        Who runs the SuperNodes' ClientApps: ``"fedstale"`` (``fedstale
        superexec``, warm workers), ``"flower"`` (``flower-superexec`` next
        to a ``--isolation process`` SuperNode) or ``"supernode"`` (the
        SuperNode's own ``flower-superexec``); see the module docstring.
    superexec_args : list[str] | None
        Extra flags for each ``fedstale superexec`` (e.g. ``--task-timeout``).
    """

    def __init__(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        workdir: str | Path,
        credentials: Credentials | None = None,
        supernode_auth: bool = False,
        superexec: str = "fedstale",
        superexec_args: list[str] | None = None,
    ) -> None:
        if supernode_auth and credentials is None:
            raise ValueError("supernode_auth: SuperNode authentication needs TLS credentials")
        if superexec not in SUPEREXECS:
            raise ValueError(f"superexec: expected one of {', '.join(SUPEREXECS)}, got '{superexec}'")
        self.superexec = superexec
        root = Path(workdir).resolve()
        self.flwr_home = root / "flwr-home"
        self.superlink_dir = root / "superlink"
        self.log_dir = root / "logs"
        self._apps = root / "apps"  # staged app folders for flwr run (fedstale.app_files)
        for folder in (self.flwr_home, self.superlink_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.credentials = credentials
        self.supernode_auth = supernode_auth
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        bin_dir = str(Path(sys.executable).parent)
        self.bin_dir = Path(bin_dir)
        self.commands = CommandLines(
            self.bin_dir, self.port, credentials, supernode_auth, superexec, list(superexec_args or [])
        )
        self.env = dict(os.environ)
        self.env.update(
            {
                "FLWR_HOME": str(self.flwr_home),
                "PATH": bin_dir + os.pathsep + self.env.get("PATH", ""),
            }
        )
        self.env.pop("MPLCONFIGDIR", None)  # set in this process by importing fedstale
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._runtime_ports: dict[str, int] = {}
        self._logs: dict[str, IO[bytes]] = {}
        (self.flwr_home / "config.toml").write_text(self.commands.config_toml())

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ set-up

    def superlink_command(self) -> list[str]:
        """The ``flower-superlink`` command line this deployment runs."""
        return self.commands.superlink()

    def supernode_command(self, partition_id: int, num_partitions: int, port: int) -> list[str]:
        """The ``flower-supernode`` command line of SuperNode ``partition_id`` (Runtime API on ``port``)."""
        return self.commands.supernode(partition_id, num_partitions, port)

    def _start(
        self, name: str, command: list[str], cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        if name in self._processes:
            raise ValueError(f"a process named '{name}' was already started")
        log = (self.log_dir / f"{name}.log").open("wb")
        self._logs[name] = log
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            command,
            cwd=str(cwd),
            env=self.env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._processes[name] = proc
        return proc

    def start_superlink(self, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """Start the SuperLink; return once it accepts connections."""
        proc = self._start("superlink", self.superlink_command(), self.superlink_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DeploymentError(f"the SuperLink exited ({proc.returncode}):\n{self.log('superlink')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return proc
            except OSError:
                time.sleep(0.2)
        raise DeploymentError(f"the SuperLink did not listen within {timeout:.0f} s:\n{self.log('superlink')}")

    def start_supernode(
        self,
        partition_id: int,
        num_partitions: int,
        private_key: Path | None = None,
        name: str | None = None,
        max_retries: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a SuperNode with ``partition-id``/``num-partitions`` node config.

        Each SuperNode gets its own free ``--port`` (its Runtime API, for its
        ClientApps) and its own working directory under ``workdir``. Unless
        ``superexec="supernode"``, its SuperExec (``<name>-superexec``, same
        working directory, ``--parent-pid`` the SuperNode) is started once the
        Runtime API listens; it exits with the SuperNode.
        """
        name = name or f"supernode-{partition_id}"
        cwd = self.superlink_dir.parent / name
        cwd.mkdir(exist_ok=True)
        port = free_port()
        command = self.commands.supernode(partition_id, num_partitions, port, private_key, max_retries)
        proc = self._start(name, command, cwd)
        self._runtime_ports[name] = port
        if self.superexec != "supernode" and wait_for_port(port, proc, timeout=120.0):
            task_log = self.log_dir / f"{name}-superexec.tasks.jsonl"
            command = self.commands.superexec_command(port, proc.pid, task_log)
            self._start(f"{name}-superexec", command, cwd, self._superexec_env())
        return proc

    def _superexec_env(self) -> dict[str, str]:
        """The deployment's environment, with this fedstale first on ``PYTHONPATH``.

        ``python -m fedstale.superexec`` then runs the fedstale this process
        imported (a checkout, or the installed package), whatever the
        SuperNode's working directory. Its workers load the app from the FAB.
        """
        env = dict(self.env)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        return env

    # --------------------------------------------------------------- commands

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``flwr ARGS`` against this deployment's ``FLWR_HOME``."""
        return subprocess.run(
            [str(self.bin_dir / "flwr"), *args],
            cwd=str(self.superlink_dir.parent),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def register_supernode(self, public_key: Path) -> int:
        """``flwr supernode register PUBLIC_KEY deploy``; return the node id."""
        proc = self.flwr("supernode", "register", str(public_key), FEDERATION, "--format", "json")
        try:
            return int(json.loads(proc.stdout)["node-id"])
        except (ValueError, KeyError) as err:
            raise DeploymentError(
                f"flwr supernode register failed:\n{proc.stdout}\n{proc.stderr}"
            ) from err

    def submit(self, app_dir: str | Path, run_config: dict[str, Any] | None = None) -> subprocess.Popen[str]:
        """Start ``flwr run ... --stream`` without waiting (see :meth:`finish`).

        ``flwr run`` gets a staged copy of the app's FAB files
        (:func:`fedstale.app_files.stage_app`): the same FAB, built without
        walking ``app_dir``'s ``.venv``.
        """
        staged = stage_app(app_dir, self._apps)
        return subprocess.Popen(  # pylint: disable=consider-using-with
            self.commands.flwr_run(staged, run_config),
            cwd=str(self.superlink_dir.parent),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def finish(
        self, proc: subprocess.Popen[str], timeout: float = 600.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Wait for a :meth:`submit`-ted run; with ``check`` raise on failure."""
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_processes([proc.pid], grace=2)
            stdout, stderr = proc.communicate()
            raise FlwrRunError(
                f"flwr run did not finish within {timeout:.0f} s:\n{stdout[-4000:]}\n{stderr[-2000:]}\n"
                + self.all_logs()
            ) from None
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        # the stream can miss a failed run's last lines (with_run_status)
        done = with_run_status(done, [str(self.bin_dir / "flwr"), FEDERATION], self.env, self.superlink_dir.parent)
        if check:
            raise_if_failed(done, self.all_logs())
        return done

    def run(
        self,
        app_dir: str | Path,
        run_config: dict[str, Any] | None = None,
        timeout: float = 600.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``flwr run APP_DIR deploy --stream`` with the given run config; waits."""
        return self.finish(self.submit(app_dir, run_config), timeout=timeout, check=check)

    # ---------------------------------------------------------- logs, cleanup

    def log(self, name: str) -> str:
        """What process ``name`` wrote so far."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self, tail: int = 3000) -> str:
        """The last ``tail`` characters of every process's log, for error messages."""
        return "\n".join(
            f"----- {name} -----\n{self.log(name)[-tail:]}" for name in self._processes
        )

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The process started as ``name`` (``superlink``, ``supernode-0``, ...)."""
        return self._processes[name]

    def processes(self) -> list[int]:
        """PIDs of every live process started for this deployment, at any depth."""
        return pids_with_flwr_home(str(self.flwr_home))

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process this deployment started, by PID and process group."""
        # Only processes not yet reaped: a reaped PID may belong to someone else now.
        started = [p.pid for p in self._processes.values() if p.poll() is None]
        stop_processes(set(started) | set(self.processes()), grace)
        stop_all(self.processes, grace)
        for proc in self._processes.values():
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue  # already killed above; only its reaping is late, not worth waiting longer for
        for log in self._logs.values():
            log.close()
        shutil.rmtree(self._apps, ignore_errors=True)


