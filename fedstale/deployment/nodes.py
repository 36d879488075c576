"""SuperNodes of a local deployment: activation, process trees, crashes, restarts, SuperExec task logs."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..processes import kill_now


ACTIVATED = re.compile(r"\[Fleet\.ActivateNode\] Activated node_id=(\d+)")
_TASK_RUNNING = re.compile(r"\[fedstale superexec\] task (\d+) \((\w+|\?)\): ClientApp running in worker (\d+)")
_TASK_ENDED = re.compile(r"\[fedstale superexec\] task (\d+) \([\w?]+\) (?:completed|failed) in worker")



class DeploymentError(RuntimeError):
    """A SuperLink or SuperNode did not start or connect; carries their logs."""


def running_tasks(superexec_log: str) -> list[tuple[int, str, int]]:
    """``(task_id, message_type, worker_pid)`` of the tasks a ``fedstale superexec``
    log says are running: the ClientApp started and the task has not ended."""
    ended = {int(m) for m in _TASK_ENDED.findall(superexec_log)}
    return [
        (int(task), kind, int(pid))
        for task, kind, pid in _TASK_RUNNING.findall(superexec_log)
        if int(task) not in ended
    ]


def read_task_log(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a ``fedstale superexec --task-log`` file (none if it is missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether 127.0.0.1:``port`` accepts connections before ``proc`` exits or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False



class SuperNodeControl:
    """A deployment's SuperNodes: waiting for them, their processes, crashes and restarts, SuperExec task logs.

    A part of :class:`~fedstale.deployment.LocalDeployment` (which starts the
    processes, keeps them in ``_processes`` and their Runtime API ports in
    ``_runtime_ports``, and provides ``log``, ``all_logs``, ``processes``,
    ``log_dir`` and ``start_supernode``).
    """

    _processes: dict[str, subprocess.Popen[bytes]]
    _runtime_ports: dict[str, int]
    log_dir: Path

    def superexec_running(self, name: str) -> list[tuple[int, str, int]]:
        """``(task_id, message_type, worker_pid)`` of tasks SuperNode ``name``'s
        ``fedstale superexec`` is running now: its log says the ClientApp
        started and not yet that the task ended."""
        return running_tasks(self.log(f"{name}-superexec"))

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
        return read_task_log(self.log_dir / f"{name}-superexec.tasks.jsonl")

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

