"""The SuperExec loop of ``fedstale superexec`` (its warm workers: :mod:`fedstale.superexec.worker_pool`).

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
heartbeat expires, as for a dead ``flwr-clientapp``.) A worker killed in the
instant after it pushed its reply and Context but before it told the
SuperExec has already finished the task: the SuperNode refuses the
SuperExec's answer (its token is spent, HTTP 401) and keeps the worker's
reply and Context, and the task log says so (:data:`AFTER_THE_TASK`). A
worker killed while it pushed its reply may have left the reply's message
on the SuperNode without all its objects: the SuperNode then forwards that
message rather than the SuperExec's error reply, and the ServerApp reads
Flower's "Reply message objects are unavailable" error; the task log says
which of the two it may be (:data:`WHILE_REPLYING`).
"""

# pylint: disable=import-outside-toplevel,broad-exception-caught

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
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

from .options import DEFAULT_PRELOAD, Options
from .worker_pool import WorkerGone, WorkerPool, WorkerProcess, describe_exit

__all__ = ["DEFAULT_PRELOAD", "Options", "SuperExec", "WorkerPool", "describe_exit", "run_superexec"]


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
    BUSY = (httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT)
    """Answers after which the next heartbeat is sent anyway (as Flower's
    ``make_task_heartbeat_fn_http``); any other refusal ends the heartbeat."""

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
            except httpx.HTTPStatusError as err:
                if err.response.status_code not in self.BUSY:
                    return  # refused (401: the token is spent): the task is over
            except httpx.HTTPError:
                pass  # the SuperNode is restarting: try again
            self._stop_event.wait(self.INTERVAL)

    def stop(self) -> None:
        """Stop sending (and wait for a heartbeat in flight)."""
        self._stop_event.set()
        self.join(timeout=35.0)


AFTER_THE_TASK = (
    "after the task had ended: the SuperNode already had its reply and Context "
    "(it refused the SuperExec's task output, 401)"
)
"""How the task log ends the details of a worker that died after finishing its task
(the kill landed between its ``PushTaskOutput`` and its ``done`` event)."""

WHILE_REPLYING = (
    "while it pushed its reply: the ServerApp gets this error reply or, if the SuperNode "
    "already had the reply's message, Flower's 'Reply message objects are unavailable'"
)
"""How the task log ends the details of a worker that died between its
``replying`` and ``replied`` events (during ``push_message`` of its reply)."""


@dataclass
class _Outcome:
    """How one task went on its worker."""

    phase: str = "claimed"  # claimed -> input -> message -> replying -> replied -> done
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: str = ""  # why the worker failed the task (died, timed out)
    died: str = ""  # for a worker that died: "the ClientApp worker (PID n) <how>", without when
    worker: WorkerProcess | None = None


def _token_spent(err: BaseException) -> bool:
    """Whether the SuperNode refused a call because the task's token is spent (HTTP 401)."""
    return isinstance(err, httpx.HTTPStatusError) and err.response.status_code == 401


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
                when = WHILE_REPLYING if outcome.phase == "replying" else "during the task"
                outcome.died = f"the ClientApp worker (PID {worker.pid}) {how}"
                outcome.failure = f"{outcome.died} {when}"
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
            elif kind in ("input", "message", "replying", "replied"):
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
        from flwr.supernode.runtime.run_clientapp import push_message

        reason = f"fedstale superexec: {outcome.failure}"
        log(ERROR, "[fedstale superexec] %s", outcome.failure)
        if outcome.phase == "replied":
            self._finish_failed(outcome, reason)
            return
        proto = object_id = None
        if outcome.phase in ("message", "replying"):
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
            if _token_spent(err):
                self._ended_before(outcome)
                return
            log(ERROR, "[fedstale superexec] could not push the error reply: %s", err)
        self._finish_failed(outcome, reason)

    def _finish_failed(self, outcome: _Outcome, reason: str) -> None:
        """``PushTaskOutput`` with status failed and no Context (the SuperNode keeps the last one).

        Called directly rather than through Flower's ``push_task_output``,
        which logs and swallows an HTTP error: here a 401 means the task's
        token is spent, because the worker had finished the task itself.
        """
        from flwr.proto.runtime_pb2 import PushTaskOutputRequest  # pylint: disable=no-name-in-module

        try:
            self.task_client.PushTaskOutput(PushTaskOutputRequest(sub_status=SubStatus.FAILED, details=reason))
        except Exception as err:
            if _token_spent(err):
                self._ended_before(outcome)
            else:
                log(ERROR, "[fedstale superexec] could not push the task output: %s", err)

    @staticmethod
    def _ended_before(outcome: _Outcome) -> None:
        """The worker died after it had finished the task: say so, instead of a failure."""
        outcome.failure = f"{outcome.died or outcome.failure} {AFTER_THE_TASK}"
        log(WARNING, "[fedstale superexec] %s", outcome.failure)

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
