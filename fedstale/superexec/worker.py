"""A warm ClientApp worker of ``fedstale superexec``: serves many task tokens.

Started by the SuperExec (:mod:`fedstale.superexec.dispatcher`) as a
*script* (``python .../fedstale/superexec/worker.py``), never as the module
``fedstale.superexec.worker``: nothing of fedstale is imported here, so when
the worker loads the ClientApp from the installed FAB, ``fedstale`` (or any
other app package) is the FAB's copy, exactly as in ``flwr-clientapp``. This
file therefore depends on the standard library and Flower only.

Per task it does what ``flwr-clientapp`` does in
``flwr/supernode/runtime/run_clientapp.py`` (Flower 1.41), with the same
public helpers, but without exiting at the end:

1. ``PullTaskInput`` (Context, Run, FAB) and ``PullMessages`` + the message's
   objects;
2. install the FAB and load its ClientApp (once per worker: a worker serves
   one FAB, the SuperExec starts another worker for another FAB);
3. run the ClientApp; on an exception reply with the same ``Error`` as
   ``flwr-clientapp`` (``LOAD_CLIENT_APP_EXCEPTION`` or
   ``CLIENT_APP_RAISED_EXCEPTION``, same reason text);
4. ``PushMessages`` + objects (the reply), then ``PushTaskOutput`` with the
   Context and the sub-status, the Context exactly as the ClientApp left it.

Everything the ClientApp's modules cache (fedstale: the dataset, each
client's partition tensors, the model skeleton, torch's warm state) stays
in memory for the next task. The SuperExec owns the task's heartbeat and
timeout, and reports the task itself if this process dies.

Protocol with the SuperExec: JSON lines on two pipes (``--cmd-fd`` to read,
``--event-fd`` to write). The first command is ``init`` (modules to import
and, optionally, the FAB whose ClientApp to load before the first task);
then ``task`` (a token) or ``stop``. Events: ``ready``, then per task
``accepted``, ``input``, ``message`` (the message's metadata, so the
SuperExec can answer with an error if this process dies), ``replying``
(its reply is being pushed), ``replied`` and
``done`` (status, timings, Context digests, modules imported during the
task).
"""

# pylint: disable=import-outside-toplevel,broad-exception-caught

from __future__ import annotations

import os
import sys

# Run as a script, Python puts this folder first on sys.path; take it off so
# that nothing here shadows a module of the app or its dependencies.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import base64  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from logging import ERROR  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


PULL_BACKOFF = (0.02, 0.5)
"""(first, longest) wait in seconds before asking again for a message object
the SuperNode does not have yet (Flower's default: (1, 10))."""


class _Channel:
    """JSON lines in from ``cmd_fd``, out to ``event_fd``."""

    def __init__(self, cmd_fd: int, event_fd: int) -> None:
        self._reader = os.fdopen(cmd_fd, "r", encoding="utf-8")
        self._event_fd = event_fd

    def read(self) -> dict[str, Any] | None:
        line = self._reader.readline()
        return json.loads(line) if line else None

    def emit(self, event: str, **fields: Any) -> None:
        data = (json.dumps({"event": event, **fields}) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._event_fd, view)
            view = view[written:]


def _preload(modules: list[str]) -> tuple[int, list[str]]:
    """Import ``modules`` (in order); return how many imported and which failed."""
    done, failed = 0, []
    for name in modules:
        if name in sys.modules:
            done += 1
            continue
        try:
            importlib.import_module(name)
            done += 1
        except BaseException:  # a module may even call sys.exit on import
            failed.append(name)
    return done, failed


def _warm_up_torch() -> bool:
    """One tiny training step, so the first real one does not start autograd and the
    thread pool; whether it ran (not without torch, and best effort).

    The step is ``torch.optim.sgd.sgd``, the functional SGD that fedstale's
    clients use (``fedstale/client/functional_sgd.py``). ``torch.optim.SGD``
    would import ``torch._dynamo`` (~1.5 s) into every worker; a ClientApp
    that trains with ``torch.optim`` imports it on its first task instead.
    """
    if "torch" not in sys.modules:
        return False
    try:
        import torch
        from torch.optim.sgd import sgd

        layer = torch.nn.Linear(4, 2)
        before = layer.bias.detach().clone()
        loss = torch.nn.functional.cross_entropy(layer(torch.zeros(8, 4)), torch.zeros(8, dtype=torch.long))
        loss.backward()
        params = list(layer.parameters())
        with torch.no_grad():
            sgd(params, [p.grad for p in params], [None] * len(params), weight_decay=0.0, momentum=0.9,
                lr=0.1, dampening=0.0, nesterov=False, maximize=False)
        return not torch.equal(before, layer.bias)
    except Exception:
        return False


class _TokenInterceptor:
    """Flower's task-token header, with a token that changes from task to task."""

    def __init__(self) -> None:
        self.token = ""

    def intercept(self, context: Any, call_next: Any) -> Any:
        from flwr.supercore.constant import TASK_TOKEN_HEADER
        from flwr.supercore.interceptors.http.utils import add_headers

        add_headers(context.request, {TASK_TOKEN_HEADER: self.token})
        return call_next(context)


class Worker:  # pylint: disable=too-many-instance-attributes
    """Serves task tokens one after the other against one SuperNode's Runtime API."""

    def __init__(self, args: argparse.Namespace, channel: _Channel) -> None:
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient
        from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor

        self.channel = channel
        self.token = _TokenInterceptor()
        certificates = None if args.insecure else Path(args.root_certificates).read_bytes() if args.root_certificates else None
        self.client = RuntimeHttpClient.from_server_address(
            server_address=args.runtime_api_address,
            insecure=args.insecure,
            root_certificates=certificates,
            interceptors=[
                RuntimeTracingInterceptor(),
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                self.token,
            ],
            retry_invoker=make_simple_http_retry_invoker(),
        )
        self.fab_hash: str | None = None
        self.app: Any = None
        self.app_packages: set[str] = set()
        self.tasks = 0
        self._known_modules = set(sys.modules)

    # ------------------------------------------------------------- the app

    def load_app(self, fab_id: str, fab_version: str, fab_hash: str, fab_content: bytes | None = None) -> Any:
        """The FAB's ClientApp, installed (if ``fab_content``) and imported once."""
        if self.app is not None:
            if fab_hash != self.fab_hash:
                raise RuntimeError(
                    f"fedstale superexec: this worker serves FAB {self.fab_hash}, not {fab_hash}"
                )
            return self.app
        from flwr.cli.install import install_from_fab
        from flwr.clientapp.utils import get_load_client_app_fn
        from flwr.common.config import get_project_dir

        if fab_content is not None:
            install_from_fab(fab_content, skip_prompt=True)
        app_dir = Path(get_project_dir(fab_id, fab_version, fab_hash))
        self.app_packages = {p.stem if p.suffix == ".py" else p.name for p in app_dir.iterdir()}
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        self.app = load(fab_id, fab_version, fab_hash)
        self.fab_hash = fab_hash
        return self.app

    def new_modules(self) -> list[str]:
        """Modules imported since the last call, the app's own left out (in import order)."""
        fresh = [m for m in list(sys.modules) if m not in self._known_modules]
        self._known_modules.update(fresh)
        return [
            m for m in fresh
            if m.partition(".")[0] not in self.app_packages and m not in ("__main__", "__mp_main__")
        ]

    # ------------------------------------------------------------- a task

    def serve(self, token: str) -> bool:  # pylint: disable=too-many-locals,too-many-statements
        """Serve one task token; return whether this worker must be replaced."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
        from flwr.proto.node_pb2 import Node  # pylint: disable=no-name-in-module
        from flwr.proto.runtime_pb2 import (  # pylint: disable=no-name-in-module
            PullAppMessagesRequest,
            PullTaskInputRequest,
        )
        from flwr.supercore import log
        from flwr.supercore.inflatable.inflatable_protobuf_utils import (
            make_confirm_message_received_fn_protobuf,
            make_pull_object_fn_protobuf,
        )
        from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
        from flwr.supercore.task_identity import TaskIdentity
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        self.token.token = token
        self.tasks += 1
        client = self.client
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now

        message = reply = context = None
        sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        replace = False
        state_in = ""
        try:
            # 1. task input: Context, Run, FAB (as run_clientapp.pull_task_input)
            res = client.PullTaskInput(PullTaskInputRequest())
            TaskIdentity.task_id = res.task_id
            TaskIdentity.run_id = res.run.run_id
            TaskIdentity.node_id = res.context.node_id
            context = context_from_proto(res.context)
            run = run_from_proto(res.run)
            fab = fab_from_proto(res.fab)
            state_in = context.state.object_id
            self.channel.emit(
                "input", task_id=res.task_id, run_id=run.run_id, fab_hash=fab.hash_str,
                fab_id=run.fab_id, fab_version=run.fab_version, state_in=state_in,
            )
            lap("pull_input")
            # 2. the message: metadata first (the SuperExec needs it to answer
            # for this process if it dies), then its objects
            pulled = client.PullMessages(PullAppMessagesRequest())
            if not pulled.messages_list:
                raise RuntimeError("No messages received from Runtime API")
            tree = pulled.message_object_trees[0]
            self.channel.emit(
                "message",
                metadata=base64.b64encode(pulled.messages_list[0].SerializeToString()).decode(),
                object_id=tree.object_id,
                message_type=pulled.messages_list[0].metadata.message_type,
            )
            node = Node(node_id=context.node_id)
            message = pull_and_inflate_object_from_tree(
                tree,
                make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
                make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
                return_type=Message,
                # The SuperNode creates the task before it has pulled the
                # message's objects from the SuperLink; flwr-clientapp, seconds
                # later, finds them there, a warm worker asks at once. Flower's
                # default backoff (1 s, doubling) would cost it a second or more.
                initial_backoff=PULL_BACKOFF[0],
                backoff_cap=PULL_BACKOFF[1],
                max_tries_per_object=None,
            )
            message.metadata.__dict__["_message_id"] = tree.object_id
            lap("pull_message")
            # 3. the ClientApp (loaded once per worker)
            app = self.load_app(run.fab_id, run.fab_version, fab.hash_str, fab.content)
            lap("load_app")
            reply = app(message=message, context=context)
            lap("client_app")
            sub_status, details = SubStatus.COMPLETED, ""
        except Exception as ex:
            # as flwr-clientapp: the Context goes back as the app left it, the
            # reply is an Error with the same code and reason
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reason = str(type(ex)) + ":<'" + str(ex) + "'>"
            if isinstance(ex, LoadClientAppError):
                reason = "An exception was raised when attempting to load `ClientApp`"
                code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
            log(ERROR, "ClientApp raised an exception", exc_info=ex)
            sub_status, details = SubStatus.FAILED, reason
            if message:
                reply = Message(Error(code=code, reason=reason), reply_to=message)
            replace = True  # its modules' state may be half-updated
            lap("client_app")
        finally:
            # 4. the reply, then the Context and status
            if reply and context:
                try:
                    self.channel.emit("replying")  # a kill from here on may leave a half-pushed reply
                    push_message(client, reply, context)
                    self.channel.emit("replied")
                except Exception as ex:
                    log(ERROR, "Failed to push reply message", exc_info=ex)
                    replace = True
            lap("push_reply")
            push_task_output(client=client, context=context, sub_status=sub_status, details=details)
            lap("push_output")
        self.channel.emit(
            "done",
            status=sub_status,
            details=details,
            timings=timings,
            state_out=context.state.object_id if context is not None else "",
            state_keys=sorted(context.state.keys()) if context is not None else [],
            worker_tasks=self.tasks,
            modules=self.new_modules(),
            replace=replace,
        )
        return replace


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="fedstale superexec worker (started by fedstale superexec)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--cmd-fd", type=int, required=True)
    parser.add_argument("--event-fd", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Preload, then serve tokens until told to stop (or the SuperExec is gone)."""
    args = _parse_args(argv)
    channel = _Channel(args.cmd_fd, args.event_fd)
    started = time.perf_counter()
    init = channel.read()
    if init is None or init.get("cmd") != "init":
        return 1
    # fedstale keeps Matplotlib's cache in the working directory (its
    # __init__ sets this default); set it before a preloaded module imports
    # Matplotlib, as flwr-clientapp would see it.
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.getcwd(), ".cache", "matplotlib"))
    if args.parent_pid is not None:
        from flwr.supercore.app_utils import start_parent_process_monitor

        start_parent_process_monitor(args.parent_pid)
    imported, failed = _preload(list(init.get("modules", [])))
    _warm_up_torch()
    worker = Worker(args, channel)
    app_error = ""
    if init.get("app"):
        app = init["app"]
        try:
            worker.load_app(app["fab_id"], app["fab_version"], app["fab_hash"])
        except Exception as ex:  # loaded again (and reported) at the first task
            worker.app = None
            app_error = f"{type(ex).__name__}: {ex}"
    worker.new_modules()  # what is loaded now is loaded for every task
    channel.emit(
        "ready", pid=os.getpid(), seconds=time.perf_counter() - started, imported=imported,
        failed=failed[:20], app_loaded=worker.app is not None, app_error=app_error,
    )
    while True:
        command = channel.read()
        if command is None or command.get("cmd") == "stop":
            return 0
        if command.get("cmd") == "task":
            channel.emit("accepted", task_id=command.get("task_id"))
            if worker.serve(str(command["token"])):
                return 0


if __name__ == "__main__":
    sys.exit(main())
