"""Find and stop the processes a Flower launch started, by PID.

Flower's launchers start processes in their own sessions: ``flwr run .``
detaches a local SuperLink, a SuperLink detaches the SuperExec that starts
``flwr-serverapp``, a SuperNode's SuperExec starts ``flwr-clientapp``
processes. A process whose parent died is adopted by init and leaves its
parent's process group, so neither the parent's PID nor its group finds it.
What every one of them does keep is the environment it inherited: launching
with a private ``FLWR_HOME`` marks the whole tree, and
:func:`pids_with_flwr_home` finds it again through ``/proc``. Ray's own
processes are the exception: they rename themselves (``ray::IDLE``,
``ray::DashboardAgent``, ``ray::ClientAppActor``) with ``setproctitle``,
which zeroes what ``/proc/<pid>/cmdline`` and ``environ`` show, so
:func:`pids_using` finds them by the files they keep open under their Ray
instance's temporary folder.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path


KILL_WAIT = 10.0
"""Seconds to wait for SIGKILLed processes to be gone (SIGKILL is asynchronous)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pids_with_flwr_home(flwr_home: str) -> list[int]:
    """Processes whose command line or environment names ``flwr_home``.

    Every process started under ``FLWR_HOME=flwr_home`` (SuperLink,
    SuperNode, SuperExec, ServerApp and ClientApp processes, Ray's daemons
    and workers) inherits it in its environment.
    """
    marker = f"FLWR_HOME={flwr_home}".encode()
    return _pids_matching(
        lambda cmdline, environ: flwr_home.encode() in cmdline or marker + b"\0" in environ + b"\0"
    )


def pids_with_env(name: str, value: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``name=value``.

    A variable set before starting a tree of processes marks every process
    of the tree, except those that renamed themselves (Ray's: see
    :func:`pids_using`).
    """
    marker = b"\0" + f"{name}={value}".encode() + b"\0"
    return _pids_matching(lambda _cmdline, environ: marker in b"\0" + environ + b"\0")


def pids_using(folder: str | Path) -> list[int]:
    """Processes (other than this one) whose working directory or an open file is under ``folder``.

    Every process of a Ray instance (GCS, raylet, agents, workers) keeps its
    session's log files open under the instance's temporary folder
    (``ray.init(_temp_dir=...)``, ``RAY_TMPDIR``), even once Ray renamed it
    and its environment no longer shows in ``/proc`` (see the module
    docstring), and even once the folder was removed.
    """
    prefix = str(Path(folder).resolve())
    inside = (prefix, prefix + os.sep)

    def under(link: Path) -> bool:
        try:
            target = os.readlink(link)
        except OSError:
            return False
        return target == inside[0] or target.startswith(inside[1])

    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or not alive(int(entry.name)):
            continue
        try:
            found = under(entry / "cwd") or any(under(fd) for fd in (entry / "fd").iterdir())
        except OSError:  # gone, or not ours to look at
            continue
        if found:
            pids.append(int(entry.name))
    return pids


def _pids_matching(match: Callable[[bytes, bytes], bool]) -> list[int]:
    """Live processes, other than this one, whose (cmdline, environ) ``match``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if not alive(int(entry.name)):
            continue
        if match(cmdline, environ):
            pids.append(int(entry.name))
    return pids


def stop_processes(pids: Iterable[int], grace: float = 5.0) -> None:
    """SIGTERM ``pids`` and their process groups, then SIGKILL what is left.

    The caller's own process group is never signalled.
    """
    pids = list(pids)
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    groups.discard(os.getpgrp())
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        for group in groups:
            _signal_group(group, sig)
        for pid in pids:
            _signal_pid(pid, sig)
        _wait_until_gone(pids, wait)


def stop_all(find: Callable[[], Iterable[int]], grace: float = 5.0, rounds: int = 3) -> None:
    """:func:`stop_processes` on what ``find()`` lists, until it lists nothing.

    A SuperExec may start a process while the others are being stopped; a
    second look finds it.
    """
    for _ in range(rounds):
        pids = list(find())
        if not pids:
            return
        stop_processes(pids, grace)


def kill_now(pids: Iterable[int], wait: float = KILL_WAIT) -> list[int]:
    """SIGKILL ``pids``, as a crash would, and wait (up to ``wait`` s) until they are gone.

    SIGKILL is asynchronous: a process in uninterruptible sleep (e.g.
    reading torch's libraries) dies when it leaves it. Returns ``pids``.
    """
    pids = list(pids)
    for pid in pids:
        _signal_pid(pid, signal.SIGKILL)
    _wait_until_gone(pids, wait)
    return pids


def _wait_until_gone(pids: list[int], wait: float) -> None:
    deadline = time.monotonic() + wait
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
