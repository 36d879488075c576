"""The SuperExec loop of ``fedstale superexec`` and its pool of warm workers.

:class:`SuperExec` does on a SuperNode's Runtime API what Flower 1.41's
``flower-superexec`` does (``flwr/supercore/superexec/run_superexec.py``):
it polls ``AcquireTask`` for ClientApp tasks and gets a token for each. But
instead of starting a ``flwr-clientapp`` process per token, it hands the
token to a long-lived worker (:mod:`fedstale.superexec.worker`, one per FAB)
that has already imported torch and the app, and keeps the app's caches
(fedstale: dataset, partitions, model skeleton) between tasks.

One task at a time: a SuperNode runs its messages one after the other (it
waits for a message's reply before it pulls the next one), so a second
worker would have nothing to do; and the next task is only acquired after
the previous one pushed its Context (``PushTaskOutput``), so every task
reads the Context the previous one wrote.

Faults. The SuperExec sends the task's heartbeats itself and watches the
worker: a worker that raises (it replies with the ClientApp's error, as
``flwr-clientapp`` does), dies, or runs past ``task_timeout`` (it is
killed) is replaced by a new worker for the same FAB, which imports what
the previous one had imported before its first task. For a dead or killed
worker the SuperExec answers the task itself: an ``Error`` reply
(``CLIENT_APP_CRASHED``, the reason names the worker and how it ended) and
``PushTaskOutput`` with status ``failed`` and no Context, so the SuperNode
keeps the Context of the last task that finished. Then the next task is
served by the new worker. (Had the worker died before it could send the
message's metadata, the SuperNode answers by itself when the task's
heartbeat expires, as for a dead ``flwr-clientapp``.)
"""

# pylint: disable=import-outside-toplevel,broad-exception-caught

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import httpx
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import (  # pylint: disable=no-name-in-module
    AcquireTaskRequest,
    PullAppMessagesRequest,
)
from flwr.supercore import log
from flwr.supercore.constant import TaskType

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
"""Run as a script, so that the worker imports nothing of fedstale itself."""

DEFAULT_PRELOAD = (
    "numpy",
    "torch",
    "torch.optim",
    "torch.nn.functional",
    "flwr.clientapp",
    "flwr.supernode.runtime.run_clientapp",
    "sklearn.datasets",
    "flwr_datasets.partitioner",
)
"""What a worker imports before it knows its FAB: torch, Flower's ClientApp
side, and what fedstale's ClientApp imports lazily on its first task
(scikit-learn's datasets, flwr-datasets' partitioners). Missing ones are
skipped. A replacement worker also imports everything its predecessor
imported while serving tasks."""


@dataclass
class Options:  # pylint: disable=too-many-instance-attributes
    """What ``fedstale superexec`` was started with (see :func:`fedstale.superexec.build_parser`)."""

    runtime_api_address: str
    insecure: bool = False
    root_certificates: str | None = None
    parent_pid: int | None = None
    superexec_auth_secret: bytes | None = None
    health_server_address: str | None = None
    poll_interval: float = 0.05
    idle_poll_interval: float = 0.5
    fast_window: float = 10.0
    task_timeout: float = 3600.0
    worker_start_timeout: float = 300.0
    max_workers: int = 2
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    task_log: str | None = None


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


class _TokenInterceptor:
    """Flower's task-token header, for the token of the task being served."""

    def __init__(self) -> None:
        self.token = ""

    def intercept(self, context: Any, call_next: Any) -> Any:
        """Add the header, as Flower's ``RuntimeTokenHttpInterceptor`` does."""
        from flwr.supercore.constant import TASK_TOKEN_HEADER
        from flwr.supercore.interceptors.http.utils import add_headers

        add_headers(context.request, {TASK_TOKEN_HEADER: self.token})
        return call_next(context)


class _Heartbeat(threading.Thread):
    """Keeps the task being served alive on the SuperNode (``SendTaskHeartbeat``).

    Flower's ``HeartbeatSender`` with ``make_task_heartbeat_fn_http`` raises
    SIGINT in its process when a heartbeat is refused (the task is over),
    which would stop this SuperExec; this one just stops. The SuperNode
    expires a task 60 s after its last heartbeat (Flower 1.41: 2 x 30 s).
    """

    INTERVAL = 10.0

    def __init__(self, client: Any) -> None:
        super().__init__(daemon=True, name="fedstale-superexec-heartbeat")
        self._client = client
        self._stop_event = threading.Event()

    def run(self) -> None:
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # pylint: disable=no-name-in-module

        while not self._stop_event.is_set():
            try:
                if not self._client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success:
                    return
            except httpx.HTTPStatusError:
                return  # the token is no longer valid: the task is over
            except httpx.HTTPError:
                pass  # the SuperNode is busy or restarting: try again
            self._stop_event.wait(self.INTERVAL)

    def stop(self) -> None:
        """Stop sending (and wait for a heartbeat in flight)."""
        self._stop_event.set()
        self.join(timeout=35.0)


@dataclass
class _Outcome:
    """How one task went on its worker."""

    phase: str = "claimed"  # claimed -> input -> message -> replied -> done
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: str = ""  # why the worker failed the task (died, timed out)
    worker: WorkerProcess | None = None


class SuperExec:
    """Acquire ClientApp tasks from one SuperNode and serve them on warm workers."""

    MAX_FAILED_STARTS = 3

    def __init__(self, options: Options) -> None:
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient
        from flwr.supercore.tls import validate_and_resolve_root_certificates

        self.options = options
        certificates = validate_and_resolve_root_certificates(options.root_certificates, options.insecure)
        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if options.superexec_auth_secret:
            interceptors.append(
                SuperExecAuthHttpInterceptor(
                    master_secret=options.superexec_auth_secret,
                    protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"}),
                )
            )
        self.client = RuntimeHttpClient.from_server_address(
            server_address=options.runtime_api_address,
            insecure=options.insecure,
            root_certificates=certificates,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker(),
        )
        self.token = _TokenInterceptor()
        # Calls with a task's token (heartbeats, answering for a dead worker)
        # go without Flower's retry invoker: on a token that is no longer
        # valid (HTTP 401) it SIGINTs its own process, which is right for a
        # one-task flwr-clientapp, not for this one.
        self.task_client = RuntimeHttpClient.from_server_address(
            server_address=options.runtime_api_address,
            insecure=options.insecure,
            root_certificates=certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec"), self.token],
        )
        self.pool = WorkerPool(options)
        self._task_log: IO[str] | None = (
            open(options.task_log, "a", encoding="utf-8") if options.task_log else None  # noqa: SIM115
        )
        self._last_done = time.monotonic()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Serve tasks until SIGTERM/SIGINT (or the parent process is gone)."""
        self.pool.start_spare()
        interval = self.options.poll_interval
        unreachable = False
        while True:
            self.pool.check_idle()
            if self.pool.failed_starts >= self.MAX_FAILED_STARTS:
                raise SystemExit(
                    f"fedstale superexec: {self.pool.failed_starts} workers in a row ended before "
                    "they were ready (see their output above)"
                )
            try:
                response = self.client.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
                )
            except httpx.HTTPError as err:
                if not unreachable:
                    log(WARNING, "[fedstale superexec] Runtime API at %s not reachable (%s); retrying",
                        self.options.runtime_api_address, err)
                unreachable = True
                time.sleep(1.0)
                continue
            unreachable = False
            if response.HasField("task") and response.token:
                self.serve(response.task, response.token)
                self._last_done = time.monotonic()
                interval = self.options.poll_interval
                continue
            if time.monotonic() - self._last_done > self.options.fast_window:
                interval = min(self.options.idle_poll_interval, interval * 1.5)
            time.sleep(interval)

    def close(self) -> None:
        """Stop the workers, close the clients and the task log."""
        self.pool.close()
        for client in (self.client, self.task_client):
            try:
                client.close()
            except Exception:
                pass
        if self._task_log is not None:
            self._task_log.close()

    # ------------------------------------------------------------------ a task

    def serve(self, task: Any, token: str) -> None:
        """Serve one task: on a worker, with heartbeats; answer for the worker if it fails."""
        acquired = time.time()
        waited = time.monotonic() - self._last_done
        self.token.token = token
        heartbeat = _Heartbeat(self.task_client)
        heartbeat.start()
        try:
            outcome = self._on_worker(task, token)
            if outcome.failure and outcome.phase == "claimed":
                # nothing of the task was pulled: the token is still good for another worker
                outcome = self._on_worker(task, token)
            if outcome.failure:
                self._answer_for(outcome)
        finally:
            heartbeat.stop()
        self._record(task, outcome, acquired, waited)

    def _on_worker(self, task: Any, token: str) -> _Outcome:
        outcome = _Outcome()
        worker = self.pool.get(task.fab_hash)
        outcome.worker = worker
        if not worker.send({"cmd": "task", "token": token, "task_id": task.task_id}):
            outcome.failure = f"worker {worker.pid} {describe_exit(worker.returncode())} before the task"
            self.pool.replace(worker, describe_exit(worker.returncode()))
            return outcome
        deadline = time.monotonic() + self.options.worker_start_timeout
        while True:
            try:
                event = worker.read_event(deadline - time.monotonic())
            except WorkerGone:
                how = describe_exit(worker.returncode())
                outcome.failure = f"the ClientApp worker (PID {worker.pid}) {how} during the task"
                self.pool.replace(worker, how + f" during task {task.task_id}")
                return outcome
            if event is None:  # past the deadline
                limit = self.options.task_timeout if "accepted" in outcome.events else self.options.worker_start_timeout
                what = "did not finish the task" if "accepted" in outcome.events else "was not ready"
                outcome.failure = f"the ClientApp worker (PID {worker.pid}) {what} within {limit:g} s; killed"
                self.pool.replace(worker, f"{what} within {limit:g} s (task {task.task_id}); killed")
                return outcome
            kind = event.get("event")
            if kind == "ready":
                self.pool.failed_starts = 0
                continue
            outcome.events[str(kind)] = event
            if kind == "accepted":
                deadline = time.monotonic() + self.options.task_timeout
            elif kind in ("input", "message", "replied"):
                outcome.phase = str(kind)
                if kind == "message":
                    log(INFO, "[fedstale superexec] task %s (%s): ClientApp running in worker %s",
                        task.task_id, event.get("message_type", "?"), worker.pid)
                if kind == "input" and event.get("fab_id"):
                    self.pool.apps[task.fab_hash] = {"fab_id": event["fab_id"], "fab_version": event["fab_version"]}
            elif kind == "done":
                outcome.phase = "done"
                worker.tasks += 1
                self.pool.learn(task.fab_hash, list(event.get("modules", [])))
                if event.get("replace"):
                    worker.returncode(10.0)  # it exits by itself
                    self.pool.replace(worker, f"failed task {task.task_id} ({event.get('details', '')[:120]})")
                return outcome

    def _answer_for(self, outcome: _Outcome) -> None:
        """Reply with an error and finish the task, for a worker that died or was killed."""
        from flwr.app import Error, Message
        from flwr.common.serde import message_from_proto
        from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        reason = f"fedstale superexec: {outcome.failure}"
        log(ERROR, "[fedstale superexec] %s", outcome.failure)
        if outcome.phase == "replied":
            push_task_output(self.task_client, None, SubStatus.FAILED, reason)
            return
        proto = object_id = None
        if outcome.phase == "message":
            proto = ProtoMessage.FromString(base64.b64decode(outcome.events["message"]["metadata"]))
            object_id = outcome.events["message"]["object_id"]
        elif outcome.phase == "input":
            try:  # the worker may have died before pulling the message
                pulled = self.task_client.PullMessages(PullAppMessagesRequest())
                if pulled.messages_list:
                    proto, object_id = pulled.messages_list[0], pulled.message_object_trees[0].object_id
            except Exception as err:
                log(WARNING, "[fedstale superexec] could not pull the message: %s", err)
        if proto is None:
            # No message to answer: leave the task to the SuperNode, which
            # replies CLIENT_APP_CRASHED when its heartbeat expires (<= 60 s).
            log(WARNING, "[fedstale superexec] the SuperNode will time the task out")
            return
        message = message_from_proto(proto)
        message.metadata.__dict__["_message_id"] = object_id
        reply = Message(Error(code=ErrorCode.CLIENT_APP_CRASHED, reason=reason), reply_to=message)
        where = SimpleNamespace(node_id=message.metadata.dst_node_id, run_id=message.metadata.run_id)
        try:
            push_message(self.task_client, reply, where)  # type: ignore[arg-type]
        except Exception as err:
            log(ERROR, "[fedstale superexec] could not push the error reply: %s", err)
        push_task_output(self.task_client, None, SubStatus.FAILED, reason)

    def _record(self, task: Any, outcome: _Outcome, acquired: float, waited: float) -> None:
        done = outcome.events.get("done", {})
        message = outcome.events.get("message", {})
        worker = outcome.worker
        status = done.get("status", SubStatus.FAILED)
        timings = done.get("timings", {})
        entry = {
            "task_id": task.task_id,
            "run_id": task.run_id,
            "fab_hash": task.fab_hash,
            "message_type": message.get("message_type", ""),
            "status": status,
            "details": done.get("details", "") or outcome.failure,
            "worker_pid": worker.pid if worker else None,
            "worker_tasks": done.get("worker_tasks"),
            "acquired_at": acquired,
            "seconds": time.time() - acquired,
            "idle_before": waited,
            "timings": timings,
            "state_in": outcome.events.get("input", {}).get("state_in", ""),
            "state_out": done.get("state_out", ""),
            "state_keys": done.get("state_keys", []),
        }
        parts = " ".join(f"{k} {v:.3f}" for k, v in timings.items())
        log(INFO, "[fedstale superexec] task %s (%s) %s in worker %s: %.3f s [%s]",
            task.task_id, entry["message_type"] or "?", status, entry["worker_pid"], entry["seconds"], parts)
        if self._task_log is not None:
            self._task_log.write(json.dumps(entry) + "\n")
            self._task_log.flush()


def run_superexec(options: Options) -> None:
    """Run the SuperExec until it is stopped; stop its workers on the way out."""
    from flwr.supercore.app_utils import start_parent_process_monitor

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum if signum != signal.SIGINT else 0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    health = None
    if options.health_server_address is not None:
        from flwr.supercore.grpc_health import run_health_server_grpc_no_tls

        health = run_health_server_grpc_no_tls(options.health_server_address)
    if options.parent_pid is not None:
        start_parent_process_monitor(options.parent_pid)
    superexec = SuperExec(options)
    log(INFO, "[fedstale superexec] serving ClientApp tasks of the Runtime API at %s", options.runtime_api_address)
    try:
        superexec.run()
    finally:
        superexec.close()
        if health is not None:
            health.stop(grace=1)
