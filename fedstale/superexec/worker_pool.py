"""The warm worker processes of ``fedstale superexec`` and the pool that keeps one per FAB."""

# pylint: disable=import-outside-toplevel,broad-exception-caught

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

from flwr.supercore import log

from .options import WORKER_SCRIPT, Options


class WorkerGone(Exception):
    """The worker process ended (its event pipe closed)."""


def describe_exit(returncode: int | None) -> str:
    """``was killed by signal 9 (SIGKILL)`` / ``exited with code 1``."""
    if returncode is None:
        return "stopped responding"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


class WorkerProcess:
    """One worker: its process and the two pipes to it."""

    def __init__(self, options: Options, fab_hash: str | None, init: dict[str, Any]) -> None:
        cmd_r, cmd_w = os.pipe()
        event_r, event_w = os.pipe()
        command = [sys.executable, str(WORKER_SCRIPT), "--runtime-api-address", options.runtime_api_address]
        if options.insecure:
            command.append("--insecure")
        elif options.root_certificates:
            command += ["--root-certificates", options.root_certificates]
        command += ["--parent-pid", str(os.getpid()), "--cmd-fd", str(cmd_r), "--event-fd", str(event_w)]
        try:
            self.proc = subprocess.Popen(command, pass_fds=(cmd_r, event_w))  # pylint: disable=consider-using-with
        finally:
            os.close(cmd_r)
            os.close(event_w)
        self.pid = self.proc.pid
        self._cmd_fd = cmd_w
        self._event_fd = event_r
        self._buffer = b""
        self.fab_hash = fab_hash
        self.ready = False
        self.ready_seconds: float | None = None
        self.tasks = 0
        self.last_used = time.monotonic()
        self.send(init)

    def send(self, command: dict[str, Any]) -> bool:
        """Write one command; False if the worker is gone."""
        try:
            os.write(self._cmd_fd, (json.dumps(command) + "\n").encode())
            return True
        except OSError:
            return False

    def read_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, None after ``timeout`` s; :class:`WorkerGone` at EOF."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([self._event_fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(self._event_fd, 1 << 16)
            if not chunk:
                raise WorkerGone
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        event = json.loads(line)
        if event.get("event") == "ready":
            self.ready = True
            self.ready_seconds = float(event.get("seconds", 0.0))
            log(INFO, "[fedstale superexec] worker %s ready in %.1f s (%s modules imported%s)", self.pid,
                self.ready_seconds, event.get("imported"), ", app loaded" if event.get("app_loaded") else "")
        return event

    def returncode(self, wait: float = 5.0) -> int | None:
        """The exit status (waiting up to ``wait`` s for it)."""
        try:
            return self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL and reap."""
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.returncode(10.0)
        self.close_pipes()

    def stop(self, grace: float = 3.0) -> None:
        """Ask the worker to exit; SIGTERM, then SIGKILL what is left."""
        self.send({"cmd": "stop"})
        if self.returncode(grace) is None:
            self.proc.terminate()
            if self.returncode(grace) is None:
                self.kill()
        self.close_pipes()

    def close_pipes(self) -> None:
        """Close this side's pipe ends."""
        for fd in (self._cmd_fd, self._event_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._cmd_fd = self._event_fd = -1


@dataclass
class WorkerPool:
    """Workers by FAB hash, plus one not yet bound to a FAB (started ahead)."""

    options: Options
    workers: dict[str | None, WorkerProcess] = field(default_factory=dict)
    learned: dict[str, list[str]] = field(default_factory=dict)
    apps: dict[str, dict[str, str]] = field(default_factory=dict)
    failed_starts: int = 0

    def start_spare(self) -> None:
        """A worker with the default preload and no FAB yet."""
        if None not in self.workers:
            self.workers[None] = self._spawn(None)

    def _spawn(self, fab_hash: str | None) -> WorkerProcess:
        modules = list(self.options.preload)
        init: dict[str, Any] = {"cmd": "init", "modules": modules}
        if fab_hash is not None:
            modules += [m for m in self.learned.get(fab_hash, []) if m not in modules]
            if fab_hash in self.apps:
                init["app"] = {**self.apps[fab_hash], "fab_hash": fab_hash}
        worker = WorkerProcess(self.options, fab_hash, init)
        log(INFO, "[fedstale superexec] started worker %s for %s", worker.pid,
            f"FAB {fab_hash[:12]}" if fab_hash else "the first FAB")
        return worker

    def get(self, fab_hash: str) -> WorkerProcess:
        """The worker for ``fab_hash``: its own, else the spare, else a new one."""
        worker = self.workers.get(fab_hash)
        if worker is None:
            spare = self.workers.pop(None, None)
            if spare is not None:
                spare.fab_hash = fab_hash
                worker = spare
            else:
                worker = self._spawn(fab_hash)
            self.workers[fab_hash] = worker
            self._evict(keep=fab_hash)
        worker.last_used = time.monotonic()
        return worker

    def _evict(self, keep: str) -> None:
        bound = [h for h in self.workers if h is not None and h != keep]
        while len(bound) + 1 > self.options.max_workers and bound:
            oldest = min(bound, key=lambda h: self.workers[h].last_used)  # type: ignore[index]
            bound.remove(oldest)
            worker = self.workers.pop(oldest)
            log(INFO, "[fedstale superexec] stopping worker %s (FAB %s, least recently used)",
                worker.pid, str(oldest)[:12])
            worker.stop()

    def learn(self, fab_hash: str, modules: list[str]) -> None:
        """Remember what a worker of ``fab_hash`` imported, for its replacements."""
        known = self.learned.setdefault(fab_hash, [])
        seen = set(known)
        known += [m for m in modules if m not in seen]

    def replace(self, worker: WorkerProcess, why: str) -> None:
        """Retire ``worker`` (killed if still running) and start its successor at once."""
        for key, candidate in list(self.workers.items()):
            if candidate is worker:
                del self.workers[key]
        if worker.proc.poll() is None:
            worker.kill()
        else:
            worker.returncode(1.0)
            worker.close_pipes()
        if not worker.ready:
            self.failed_starts += 1
        log(WARNING, "[fedstale superexec] worker %s %s; starting a new one", worker.pid, why)
        if worker.fab_hash is not None:
            self.workers[worker.fab_hash] = self._spawn(worker.fab_hash)
        else:
            self.start_spare()

    def check_idle(self) -> None:
        """Read idle workers' events (``ready``); replace those that died."""
        for worker in list(self.workers.values()):
            try:
                while worker.read_event(0.0) is not None:
                    pass
                if worker.ready:
                    self.failed_starts = 0
            except WorkerGone:
                self.replace(worker, describe_exit(worker.returncode(1.0)) + " while idle")

    def close(self) -> None:
        """Stop every worker."""
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()


