"""A real Flower deployment on one machine: a SuperLink, SuperNodes, ``flwr run``.

:class:`LocalDeployment` starts ``flower-superlink`` and ``flower-supernode``
processes on 127.0.0.1 with free ports and a private ``FLWR_HOME`` (whose
``config.toml`` names the SuperLink as the federation ``deploy``), submits
runs with ``flwr run APP deploy --stream`` exactly as a user would on two
machines, and stops every process it started by PID, including the
SuperExec, ``flwr-serverapp`` and ``flwr-clientapp`` processes Flower
starts in sessions of their own (see :mod:`fedstale.processes`). With
:class:`~fedstale.certificates.Credentials` the SuperLink serves TLS (and
so do the SuperNodes' Runtime APIs) and may require SuperNode
authentication.

Each SuperNode's ClientApps run under one of three SuperExecs
(``superexec=``):

- ``"fedstale"`` (default): the SuperNode is started with ``--isolation
  process`` and next to it ``python -m fedstale.superexec`` (the ``fedstale
  superexec`` command, :mod:`fedstale.superexec`), which serves every task
  in a warm worker process;
- ``"flower"``: the same topology with Flower's ``flower-superexec`` in its
  place (one ``flwr-clientapp`` process per task), the same flags;
- ``"supernode"``: Flower's default, the SuperNode (``--isolation
  subprocess``) starts ``flower-superexec`` itself.

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
from .simulation.launcher import FlwrRunError, format_run_config, run_failed

FEDERATION = "deploy"
"""The name of the SuperLink connection in ``$FLWR_HOME/config.toml``."""

ACTIVATED = re.compile(r"\[Fleet\.ActivateNode\] Activated node_id=(\d+)")
_TASK_RUNNING = re.compile(r"\[fedstale superexec\] task (\d+) \((\w+|\?)\): ClientApp running in worker (\d+)")
_TASK_ENDED = re.compile(r"\[fedstale superexec\] task (\d+) \([\w?]+\) (?:completed|failed) in worker")


SUPEREXECS = ("fedstale", "flower", "supernode")
"""The ``superexec`` choices of :class:`LocalDeployment`."""


class DeploymentError(RuntimeError):
    """A SuperLink or SuperNode did not start or connect; carries their logs."""


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether 127.0.0.1:``port`` accepts connections before ``proc`` exits or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


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
        self.superexec_args = list(superexec_args or [])
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
        self._write_config()

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

    def _write_config(self) -> None:
        """``config.toml`` with the federation ``deploy`` pointing at the SuperLink."""
        lines = ["[superlink]", f'default = "{FEDERATION}"', "", f"[superlink.{FEDERATION}]"]
        lines.append(f'address = "{self.address}"')
        if self.credentials is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.credentials.ca_cert.resolve()}"')
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

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

    def superlink_command(self) -> list[str]:
        """The ``flower-superlink`` command line this deployment runs."""
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

    def supernode_command(
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
        if self.superexec != "supernode":
            command += ["--isolation", "process"]
        if self.credentials is not None:  # the Runtime API serves TLS too
            creds = self.credentials
            command += ["--ssl-certfile", str(creds.server_cert), "--ssl-keyfile", str(creds.server_key),
                        "--ssl-ca-certfile", str(creds.ca_cert)]
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

    def superexec_command(self, name: str, port: int, parent_pid: int | None = None) -> list[str]:
        """The SuperExec command line next to SuperNode ``name`` (Runtime API on ``port``).

        ``fedstale superexec`` and ``flower-superexec`` take the same flags;
        the former also writes one JSON line per task to
        ``logs/<name>-superexec.tasks.jsonl`` (:meth:`superexec_tasks`).
        """
        if self.superexec == "fedstale":
            command = [sys.executable, "-m", "fedstale.superexec"]
        else:
            command = [str(self.bin_dir / "flower-superexec")]
        if self.credentials is None:
            command.append("--insecure")
        else:
            command += ["--root-certificates", str(self.credentials.ca_cert)]
        command += ["--runtime-api-address", f"127.0.0.1:{port}"]
        if parent_pid is not None:
            command += ["--parent-pid", str(parent_pid)]
        if self.superexec == "fedstale":
            command += ["--task-log", str(self.log_dir / f"{name}-superexec.tasks.jsonl"), *self.superexec_args]
        return command

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
        command = self.supernode_command(partition_id, num_partitions, port, private_key, max_retries)
        proc = self._start(name, command, cwd)
        self._runtime_ports[name] = port
        if self.superexec != "supernode" and _wait_for_port(port, proc, timeout=120.0):
            self._start(f"{name}-superexec", self.superexec_command(name, port, proc.pid), cwd, self._superexec_env())
        return proc

    def _superexec_env(self) -> dict[str, str]:
        """The deployment's environment, with this fedstale first on ``PYTHONPATH``.

        ``python -m fedstale.superexec`` then runs the fedstale this process
        imported (a checkout, or the installed package), whatever the
        SuperNode's working directory. Its workers load the app from the FAB.
        """
        env = dict(self.env)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        return env

    def superexec_running(self, name: str) -> list[tuple[int, str, int]]:
        """``(task_id, message_type, worker_pid)`` of tasks SuperNode ``name``'s
        ``fedstale superexec`` is running now: its log says the ClientApp
        started and not yet that the task ended."""
        text = self.log(f"{name}-superexec")
        ended = {int(m) for m in _TASK_ENDED.findall(text)}
        return [
            (int(task), kind, int(pid))
            for task, kind, pid in _TASK_RUNNING.findall(text)
            if int(task) not in ended
        ]

    def superexec_tasks(self, name: str) -> list[dict[str, Any]]:
        """The tasks ``fedstale superexec`` of SuperNode ``name`` served so far, one dict each.

        Keys: ``task_id``, ``run_id``, ``message_type``, ``status``
        (``completed``/``failed``), ``details``, ``worker_pid``,
        ``worker_tasks`` (tasks that worker had served), ``seconds``,
        ``idle_before``, ``timings`` (the worker's ``pull_input``,
        ``pull_message``, ``load_app``, ``client_app``, ``push_reply``,
        ``push_output`` seconds), ``state_in``/``state_out`` (content hashes
        of the Context state pulled and pushed) and ``state_keys``.
        """
        path = self.log_dir / f"{name}-superexec.tasks.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def supernode_pids(self, name: str) -> list[int]:
        """The SuperNode ``name`` and the processes serving its Runtime API.

        Its SuperExec, ``flwr-clientapp`` processes and ``fedstale
        superexec`` workers run in sessions of their own; they are the
        processes of this deployment whose command line names the
        SuperNode's Runtime API port (``HOST:PORT``).
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

    def run_command(self, app_dir: str | Path, run_config: dict[str, Any] | None = None) -> list[str]:
        """The ``flwr run`` command line for ``app_dir`` on this deployment."""
        command = [str(self.bin_dir / "flwr"), "run", str(app_dir), FEDERATION, "--stream"]
        if run_config:
            command += ["--run-config", format_run_config(run_config)]
        return command

    def submit(self, app_dir: str | Path, run_config: dict[str, Any] | None = None) -> subprocess.Popen[str]:
        """Start ``flwr run ... --stream`` without waiting (see :meth:`finish`)."""
        return subprocess.Popen(  # pylint: disable=consider-using-with
            self.run_command(app_dir, run_config),
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
        if check and run_failed(done):
            raise FlwrRunError(
                f"flwr run failed ({run_failed(done)}):\n{stdout[-4000:]}\n{stderr[-2000:]}\n"
                + self.all_logs()
            )
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
