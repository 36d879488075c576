"""A real Flower deployment on one machine: a SuperLink, SuperNodes, ``flwr run``.

:class:`LocalDeployment` starts ``flower-superlink`` and ``flower-supernode``
processes on 127.0.0.1 with free ports and a private ``FLWR_HOME`` (whose
``config.toml`` names the SuperLink as the federation ``deploy``), submits
runs with ``flwr run APP deploy --stream`` exactly as a user would on two
machines, and stops every process it started by PID, including the
SuperExec, ``flwr-serverapp`` and ``flwr-clientapp`` processes Flower
starts in sessions of their own (see :mod:`fedstale.processes`). With
:class:`~fedstale.certificates.Credentials` the SuperLink serves TLS and
may require SuperNode authentication.

Example::

    with LocalDeployment(tmp_path) as dep:
        dep.start_superlink()
        for p in range(2):
            dep.start_supernode(p, 2)
        dep.wait_for_supernodes(2)
        proc = dep.run(".", {"delay.clock": "wall", "data.num_clients": 2}, check=True)
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .certificates import Credentials
from .processes import free_port, kill_now, pids_with_flwr_home, stop_all, stop_processes
from .simulation.launcher import FlwrRunError, format_run_config, raise_if_failed

FEDERATION = "deploy"
"""The name of the SuperLink connection in ``$FLWR_HOME/config.toml``."""

ACTIVATED = re.compile(r"\[Fleet\.ActivateNode\] Activated node_id=(\d+)")


class DeploymentError(RuntimeError):
    """A SuperLink or SuperNode did not start or connect; carries their logs."""


class LocalDeployment:
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
    """

    def __init__(
        self,
        workdir: str | Path,
        credentials: Credentials | None = None,
        supernode_auth: bool = False,
    ) -> None:
        if supernode_auth and credentials is None:
            raise ValueError("supernode_auth: SuperNode authentication needs TLS credentials")
        root = Path(workdir).resolve()
        self.flwr_home = root / "flwr-home"
        self.superlink_dir = root / "superlink"
        self.log_dir = root / "logs"
        for folder in (self.flwr_home, self.superlink_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.credentials = credentials
        self.supernode_auth = supernode_auth
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        bin_dir = str(Path(sys.executable).parent)
        self.bin_dir = Path(bin_dir)
        self.commands = CommandLines(self.bin_dir, self.port, credentials, supernode_auth)
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

    def _start(self, name: str, command: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        if name in self._processes:
            raise ValueError(f"a process named '{name}' was already started")
        log = (self.log_dir / f"{name}.log").open("wb")
        self._logs[name] = log
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            command,
            cwd=str(cwd),
            env=self.env,
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
        ClientApps) and its own working directory under ``workdir``.
        """
        name = name or f"supernode-{partition_id}"
        cwd = self.superlink_dir.parent / name
        cwd.mkdir(exist_ok=True)
        port = free_port()
        command = self.commands.supernode(partition_id, num_partitions, port, private_key, max_retries)
        proc = self._start(name, command, cwd)
        self._runtime_ports[name] = port
        return proc

    def supernode_pids(self, name: str) -> list[int]:
        """The SuperNode ``name`` and the processes serving its Runtime API.

        Its SuperExec and ``flwr-clientapp`` processes run in sessions of
        their own; they are the processes of this deployment whose command
        line names the SuperNode's Runtime API port (``HOST:PORT``).
        """
        suffix = f":{self._runtime_ports[name]}"
        pids = [self._processes[name].pid] if self._processes[name].poll() is None else []
        for pid in self.processes():
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if pid not in pids and any(arg.endswith(suffix) for arg in args):
                pids.append(pid)
        return pids

    def kill_supernode(self, name: str) -> list[int]:
        """SIGKILL SuperNode ``name`` and its SuperExec/ClientApp processes, as a crash would.

        Returns the PIDs killed (the SuperNode's first). Nothing is
        deregistered: the SuperLink only notices through missed heartbeats.
        """
        pids = kill_now(self.supernode_pids(name))
        self._processes[name].wait(timeout=10)
        return pids

    def restart_supernode(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        partition_id: int,
        num_partitions: int,
        private_key: Path,
        node_id: int,
        timeout: float = 180.0,
    ) -> str:
        """Start a crashed SuperNode again with its key; return the new process's name.

        With the same key the SuperNode comes back as the same ``node_id``,
        but the SuperLink refuses to activate a node it still counts as
        online ("[code: 2004] Failed to activate SuperNode", exit code 305)
        until it misses its heartbeats: up to 2 × 30 s after the crash.
        So this starts it again until the SuperLink logs a new activation
        of ``node_id``.
        """
        activations = self.activated_nodes().count(node_id)
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            name = f"supernode-{partition_id}-restart-{attempt}"
            proc = self.start_supernode(partition_id, num_partitions, private_key, name=name)
            while proc.poll() is None and time.monotonic() < deadline:
                if self.activated_nodes().count(node_id) > activations:
                    return name
                time.sleep(0.2)
            time.sleep(1.0)
        raise DeploymentError(
            f"SuperNode {partition_id} (node {node_id}) was not activated again within "
            f"{timeout:.0f} s:\n{self.all_logs()}"
        )

    def wait_for_supernodes(self, count: int, timeout: float = 120.0) -> list[int]:
        """Wait until ``count`` SuperNodes are active; return their node ids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.activated_nodes()
            if len(ids) >= count:
                return ids
            time.sleep(0.2)
        raise DeploymentError(
            f"{len(self.activated_nodes())} of {count} SuperNodes connected within {timeout:.0f} s:\n"
            + self.all_logs()
        )

    def activated_nodes(self) -> list[int]:
        """Node ids the SuperLink activated so far (from its log)."""
        return [int(m) for m in ACTIVATED.findall(self.log("superlink"))]

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
        """Start ``flwr run ... --stream`` without waiting (see :meth:`finish`)."""
        return subprocess.Popen(  # pylint: disable=consider-using-with
            self.commands.flwr_run(app_dir, run_config),
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
                pass
        for log in self._logs.values():
            log.close()


class CommandLines:
    """The command lines and ``config.toml`` of a deployment on 127.0.0.1.

    Parameters
    ----------
    bin_dir : Path
        Where ``flower-superlink``, ``flower-supernode`` and ``flwr`` are.
    port : int
        The SuperLink's Fleet API port.
    credentials : Credentials | None
        TLS files; ``None`` means ``--insecure``.
    supernode_auth : bool
        Whether the SuperLink requires SuperNode authentication.
    """

    def __init__(
        self, bin_dir: Path, port: int, credentials: Credentials | None, supernode_auth: bool
    ) -> None:
        self.bin_dir = bin_dir
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.credentials = credentials
        self.supernode_auth = supernode_auth

    def config_toml(self) -> str:
        """``config.toml`` with the federation ``deploy`` pointing at the SuperLink."""
        lines = ["[superlink]", f'default = "{FEDERATION}"', "", f"[superlink.{FEDERATION}]"]
        lines.append(f'address = "{self.address}"')
        if self.credentials is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.credentials.ca_cert.resolve()}"')
        return "\n".join(lines) + "\n"

    def _tls_server_args(self) -> list[str]:
        if self.credentials is None:
            return ["--insecure"]
        creds = self.credentials
        return [
            "--ssl-ca-certfile",
            str(creds.ca_cert),
            "--ssl-certfile",
            str(creds.server_cert),
            "--ssl-keyfile",
            str(creds.server_key),
        ]

    def superlink(self) -> list[str]:
        """The ``flower-superlink`` command line."""
        command = [str(self.bin_dir / "flower-superlink"), *self._tls_server_args()]
        if self.supernode_auth:
            command.append("--enable-supernode-auth")
        return command + [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]

    def supernode(
        self,
        partition_id: int,
        num_partitions: int,
        port: int,
        private_key: Path | None = None,
        max_retries: int | None = None,
    ) -> list[str]:
        """The ``flower-supernode`` command line for one SuperNode."""
        command = [str(self.bin_dir / "flower-supernode")]
        if self.credentials is None:
            command.append("--insecure")
        else:
            command += ["--root-certificates", str(self.credentials.ca_cert)]
        if private_key is not None:
            command += ["--auth-supernode-private-key", str(private_key)]
        if max_retries is not None:
            command += ["--max-retries", str(max_retries)]
        return command + [
            "--superlink",
            self.address,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--node-config",
            f"partition-id={partition_id} num-partitions={num_partitions}",
        ]

    def flwr_run(self, app_dir: str | Path, run_config: dict[str, Any] | None = None) -> list[str]:
        """The ``flwr run`` command line for ``app_dir`` on this deployment."""
        command = [str(self.bin_dir / "flwr"), "run", str(app_dir), FEDERATION, "--stream"]
        if run_config:
            command += ["--run-config", format_run_config(run_config)]
        return command
