"""``fedstale superexec``: warm ClientApp workers behind a real SuperNode.

The e2e tests here run a *probe* Flower app written by the test (no torch,
so each task costs milliseconds): its ServerApp sends QUERY messages to the
one SuperNode, one after the other, each naming what the ClientApp should
do (count, raise, hang, exit); the ClientApp keeps a counter and a float
array in ``Context.state`` and replies with its PID, the counter and the
array it found. The same plan runs on stock ``flower-superexec``
(``flwr-clientapp`` per task) and on ``fedstale superexec``: the replies,
error codes and Context states must be the same, the PIDs not. The
fedstale-app tests (FedAsync/FedBuff, TLS, faults, a warm worker killed
mid-task, DP-SGD ε and compression residuals across tasks) are in
``test_deployment.py`` and ``test_deployment_faults.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedstale import superexec
from fedstale.deployment import LocalDeployment
from fedstale.superexec import dispatcher
from fedstale.superexec.dispatcher import describe_exit
from tests.helpers import PROBE_PYPROJECT

SERVER = '''\
"""Send the plan's QUERY messages to the one SuperNode, one at a time; write the replies."""
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    plan = str(context.run_config["plan"]).split(",")
    while not (nodes := list(grid.get_node_ids())):
        time.sleep(0.2)
    results = []
    for step, action in enumerate(plan):
        message = Message(
            RecordDict({"config": ConfigRecord({"action": action, "step": step})}),
            dst_node_id=nodes[0],
            message_type=MessageType.QUERY,
        )
        (reply,) = grid.send_and_receive([message], timeout=600)
        if reply.has_error():
            results.append({"step": step, "action": action, "error": int(reply.error.code),
                            "reason": reply.error.reason})
        else:
            results.append({"step": step, "action": action, **dict(reply.content["result"])})
    Path(str(context.run_config["out"])).write_text(json.dumps(results))
'''

CLIENT = '''\
"""Keep a counter and an array in Context.state; do what the message says."""
import os
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
VERSION = "{version}"


@app.query()
def query(message: Message, context: Context) -> Message:
    action = message.content["config"]["action"]
    count = int(context.state["probe"]["count"]) if "probe" in context.state else 0
    seen = context.state["residual"]["r"].numpy() if "residual" in context.state else np.zeros(3)
    if action == "raise":
        raise RuntimeError("probe raised")
    if action == "poison":  # change the state, then raise: flwr-clientapp pushes it anyway
        context.state["probe"] = ConfigRecord({{"count": count + 100}})
        raise ValueError("probe poisoned its state")
    if action == "hang":
        time.sleep(3600)
    if action == "exit":
        os._exit(3)
    context.state["probe"] = ConfigRecord({{"count": count + 1}})
    context.state["residual"] = ArrayRecord({{"r": Array(seen / 3.0 + np.array([0.1, 0.2, 0.7]))}})
    result = ConfigRecord({{"pid": os.getpid(), "count": count + 1, "seen": [float(v) for v in seen],
                           "version": VERSION}})
    return Message(RecordDict({{"result": result}}), reply_to=message)
'''


def write_probe_app(folder: Path, version: str = "1.0.0") -> Path:
    """The probe app in ``folder`` (a FAB of its own per ``version``)."""
    (folder / "probe").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PROBE_PYPROJECT.format(version=version))
    (folder / "probe" / "__init__.py").write_text("")
    (folder / "probe" / "server.py").write_text(SERVER)
    (folder / "probe" / "client.py").write_text(CLIENT.format(version=version))
    return folder


def run_plan(dep: LocalDeployment, app: Path, plan: list[str], out: Path) -> list[dict]:
    """Submit the probe app with ``plan``; its replies, one dict per step."""
    dep.run(app, {"plan": ",".join(plan), "out": str(out)}, timeout=900, check=True)
    return json.loads(out.read_text())


def _without_pids(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "pid"} for r in results]


# ------------------------------------------------------------ no processes


def test_refuses_an_untested_flower_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(superexec, "flower_version", lambda: "1.42.0")
    assert superexec.main(["--insecure", "--runtime-api-address", "127.0.0.1:9094"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedstale superexec: Flower 1.42.0 is installed")
    assert "1.41.0" in err and "flower-superexec" in err and "--allow-untested-flower" in err
    # with the override it gets past the check (and stops at the next refusal)
    assert superexec.main(["--insecure", "--runtime-api-address", "127.0.0.1:9094", "--allow-untested-flower",
                           "--allow-runtime-dependency-installation"]) == 2
    assert "runtime dependency installation is not supported" in capsys.readouterr().err
    monkeypatch.undo()
    assert superexec.check_flower_version() is None  # the installed one was tested


def test_accepts_flower_superexecs_flags():
    """What a SuperNode or compose file passes flower-superexec, it accepts."""
    from flwr.supercore.cli.flower_superexec import _parse_args

    for argv in (
        ["--insecure", "--runtime-api-address", "127.0.0.1:9094", "--parent-pid", "12"],
        ["--root-certificates", "ca.crt", "--runtime-api-address", "supernode-0:9094",
         "--superexec-auth-secret-file", "secret", "--health-server-address", "0.0.0.0:8081"],
        ["--insecure", "--appio-api-address", "127.0.0.1:9094"],
    ):
        ours, theirs = superexec.build_parser().parse_args(argv), _parse_args().parse_args(argv)
        for key in ("runtime_api_address", "insecure", "root_certificates", "parent_pid",
                    "superexec_auth_secret_file", "health_server_address"):
            assert getattr(ours, key) == getattr(theirs, key), (argv, key)


def test_registers_as_a_subcommand():
    import argparse

    parser = argparse.ArgumentParser(prog="fedstale")
    superexec.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["superexec", "--insecure", "--runtime-api-address", "h:1", "--task-timeout", "5"])
    assert args.command == "superexec" and args.task_timeout == 5.0 and args.insecure


def test_describe_exit():
    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"
    assert describe_exit(3) == "exited with code 3"


def _refused(status: int, method: str) -> httpx.HTTPStatusError:
    """The error Flower's Runtime API client raises for an HTTP ``status`` answer to ``method``."""
    response = httpx.Response(status, request=httpx.Request("POST", f"http://supernode/{method}"))
    return httpx.HTTPStatusError(f"{status}", request=response.request, response=response)


class _TaskClient:
    """A SuperNode's Runtime API that answers ``PushTaskOutput`` with ``status`` (200: accepted)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.outputs: list = []

    def PushTaskOutput(self, request):  # noqa: N802 (Flower's method name)
        self.outputs.append(request)
        if self.status != 200:
            raise _refused(self.status, "PushTaskOutput")


@pytest.mark.parametrize("status", [200, 401, 500])
def test_a_worker_killed_after_it_replied(status):
    """A worker killed once it had sent its reply: the SuperExec pushes a failed
    task output (no Context) for it. A 401 means the worker had already
    pushed its own (the task's token is spent), so the task ended before the
    kill, and the record says so; another error leaves the record as it was."""
    exec_ = object.__new__(dispatcher.SuperExec)
    exec_.task_client = _TaskClient(status)
    died = "the ClientApp worker (PID 7) was killed by signal 9 (SIGKILL)"
    killed = f"{died} during the task"
    outcome = dispatcher._Outcome(phase="replied", failure=killed, died=died)
    exec_._answer_for(outcome)
    (output,) = exec_.task_client.outputs
    assert output.sub_status == "failed" and not output.HasField("context")
    assert output.details == f"fedstale superexec: {killed}"
    if status == 401:
        assert outcome.failure == (
            "the ClientApp worker (PID 7) was killed by signal 9 (SIGKILL) after the task had ended: "
            "the SuperNode already had its reply and Context (it refused the SuperExec's task output, 401)"
        )
    else:
        assert outcome.failure == killed


class _HeartbeatClient:
    """Answers ``SendTaskHeartbeat`` with the HTTP statuses in ``answers``, in turn."""

    def __init__(self, answers: list[int]) -> None:
        self.answers, self.sent = list(answers), 0

    def SendTaskHeartbeat(self, request):  # noqa: N802 (Flower's method name)
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatResponse  # pylint: disable=no-name-in-module

        self.sent += 1
        status = self.answers.pop(0) if self.answers else 200
        if status != 200:
            raise _refused(status, "SendTaskHeartbeat")
        return SendTaskHeartbeatResponse(success=True)


@pytest.mark.parametrize(("answers", "sent"), [([503, 504, 401], 3), ([500], 1), ([401], 1)])
def test_the_heartbeat_goes_on_while_the_supernode_is_busy_and_ends_when_refused(answers, sent):
    """As Flower's own task heartbeat: 503 and 504 mean "try again"; any other
    refusal (401: the task's token is spent) ends it."""
    client = _HeartbeatClient(answers)
    heartbeat = dispatcher._Heartbeat(client)
    heartbeat.INTERVAL = 0.01
    heartbeat.start()
    heartbeat.join(timeout=5)
    assert not heartbeat.is_alive() and client.sent == sent


class _DyingWorker:
    """A worker that sends ``events`` for a task, then dies by SIGKILL."""

    pid = 7

    def __init__(self, events: list[dict]) -> None:
        self.events = list(events)

    def send(self, command):
        return True

    def read_event(self, timeout):
        if self.events:
            return self.events.pop(0)
        raise dispatcher.WorkerGone()

    def returncode(self, wait=5.0):
        return -9


class _Pool:
    def __init__(self, worker) -> None:
        self.worker, self.replaced, self.failed_starts, self.apps = worker, [], 0, {}

    def get(self, fab_hash):
        return self.worker

    def replace(self, worker, why):
        self.replaced.append(why)


def _train_message_event() -> dict:
    """The worker's ``message`` event for a TRAIN message from the SuperLink
    (node 0) to node 3 (built as a proto: ``Message()`` would need Flower's
    TaskIdentity, which only a ClientApp process has)."""
    import base64
    import time

    from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
    from flwr.proto.message_pb2 import Metadata  # pylint: disable=no-name-in-module
    from flwr.proto.recorddict_pb2 import RecordDict  # pylint: disable=no-name-in-module

    proto = ProtoMessage(metadata=Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=3,
                                           message_type="train", ttl=3600.0, created_at=time.time()),
                         content=RecordDict())  # the metadata the SuperNode sends: content comes as objects
    return {"event": "message", "metadata": base64.b64encode(proto.SerializeToString()).decode(),
            "object_id": "m1", "message_type": "train"}


@pytest.mark.parametrize("last", ["message", "replying"])
def test_a_worker_killed_while_it_trains_or_pushes_its_reply(monkeypatch, last):
    """Killed while its ClientApp ran, or after its ``replying`` event (its
    reply half-pushed): the SuperExec pushes an error reply for the message
    and a failed task output either way, and the record says which."""
    events = [{"event": "accepted"}, {"event": "input"}, _train_message_event()]
    if last == "replying":
        events.append({"event": "replying"})
    exec_ = object.__new__(dispatcher.SuperExec)
    exec_.pool = _Pool(_DyingWorker(events))
    exec_.options = type("Options", (), {"worker_start_timeout": 5.0, "task_timeout": 5.0})()
    exec_.task_client = _TaskClient(200)
    pushed = []
    monkeypatch.setattr("flwr.supernode.runtime.run_clientapp.push_message",
                        lambda client, reply, where: pushed.append((reply, where)))
    outcome = exec_._on_worker(type("Task", (), {"task_id": 5, "fab_hash": "f"})(), "token")
    when = "during the task" if last == "message" else dispatcher.WHILE_REPLYING
    assert outcome.phase == last
    assert outcome.failure == f"the ClientApp worker (PID 7) was killed by signal 9 (SIGKILL) {when}"
    assert exec_.pool.replaced == ["was killed by signal 9 (SIGKILL) during task 5"]
    exec_._answer_for(outcome)
    ((reply, where),) = pushed
    assert reply.error.code == 8 and reply.error.reason == f"fedstale superexec: {outcome.failure}"
    assert reply.metadata.reply_to_message_id == "m1" and where.node_id == 3
    (output,) = exec_.task_client.outputs
    assert output.sub_status == "failed" and output.details == f"fedstale superexec: {outcome.failure}"


# ------------------------------------------------------------ e2e


SAME_PLAN = ["count", "count", "raise", "count", "poison", "count", "count"]
"""Runs on both SuperExecs: the same replies, errors and Context states."""


@pytest.mark.e2e
@pytest.mark.xdist_group("superexec-same-replies")
def test_same_replies_and_context_as_flower_superexec(tmp_path):
    app = write_probe_app(tmp_path / "app")
    results = {}
    for kind in ("flower", "fedstale"):
        with LocalDeployment(tmp_path / kind, superexec=kind, superexec_args=["--preload", "numpy"]) as dep:
            dep.start_superlink()
            dep.start_supernode(0, 1)
            dep.wait_for_supernodes(1)
            results[kind] = run_plan(dep, app, SAME_PLAN, tmp_path / f"{kind}.json")
            if kind == "fedstale":
                tasks = [t for t in dep.superexec_tasks("supernode-0") if t["message_type"] == "query"]
        assert dep.processes() == []
    stock, warm = results["flower"], results["fedstale"]
    assert _without_pids(warm) == _without_pids(stock)
    # the Context as flwr-clientapp leaves it: counts go on after an exception,
    # and a state changed before raising is kept (count + 100)
    assert [r.get("count", r.get("error")) for r in stock] == [1, 2, 2, 3, 2, 104, 105]
    assert stock[2]["reason"] == "<class 'RuntimeError'>:<'probe raised'>"
    # the array round-trips bit for bit: each task sees what the previous one stored
    done = [r for r in stock if "pid" in r]
    for before, after in zip(done, done[1:]):
        assert after["seen"] == (np.array(before["seen"]) / 3.0 + np.array([0.1, 0.2, 0.7])).tolist()
    # stock: a process per task; warm: one worker until a task raises, then a new one
    assert len({r["pid"] for r in stock if "pid" in r}) == 5
    pids = [r.get("pid") for r in warm]
    assert pids[0] == pids[1] and pids[3] != pids[0] and pids[5] not in (pids[0], pids[3]) and pids[6] == pids[5]
    # the SuperExec's task log: each task pulled the Context the previous one pushed
    assert [t["status"] for t in tasks] == ["completed" if "pid" in r else "failed" for r in warm]
    for previous, task in zip(tasks, tasks[1:]):
        assert task["state_in"] == previous["state_out"]


@pytest.mark.e2e
@pytest.mark.xdist_group("superexec-faulty-workers")
def test_faulty_workers_are_replaced_and_a_new_fab_gets_its_own_worker(tmp_path):
    """raise / hang past --task-timeout / exit: an error reply each, the next task on a new worker.

    Then a second version of the app (another FAB) gets a fresh worker, and
    the first version, submitted again, its warm worker back.
    """
    first = write_probe_app(tmp_path / "app-1.0.0")
    second = write_probe_app(tmp_path / "app-1.0.1", version="1.0.1")
    plan = ["count", "count", "raise", "count", "hang", "count", "exit", "count", "count"]
    with LocalDeployment(tmp_path / "dep", superexec_args=["--task-timeout", "20", "--preload", "numpy"]) as dep:
        dep.start_superlink()
        dep.start_supernode(0, 1)
        dep.wait_for_supernodes(1)
        results = run_plan(dep, first, plan, tmp_path / "faults.json")
        other = run_plan(dep, second, ["count", "count"], tmp_path / "other.json")
        again = run_plan(dep, first, ["count"], tmp_path / "again.json")
        tasks = dep.superexec_tasks("supernode-0")
    assert dep.processes() == []

    counts = [r.get("count") for r in results]
    assert counts == [1, 2, None, 3, None, 4, None, 5, 6]  # the Context survives every fault
    errors = {r["action"]: r for r in results if "error" in r}
    assert errors["raise"]["error"] == 2  # CLIENT_APP_RAISED_EXCEPTION, as flwr-clientapp
    assert errors["hang"]["error"] == 8  # CLIENT_APP_CRASHED
    assert errors["hang"]["reason"].startswith("fedstale superexec: the ClientApp worker (PID ")
    assert errors["hang"]["reason"].endswith("did not finish the task within 20 s; killed")
    assert errors["exit"]["error"] == 8 and errors["exit"]["reason"].endswith("exited with code 3 during the task")
    pids = [r.get("pid") for r in results]
    workers = [pids[0], pids[3], pids[5], pids[7]]
    assert pids[1] == pids[0] and pids[8] == pids[7] and len(set(workers)) == 4
    # another FAB: a worker of its own; the first FAB's last worker kept warm
    assert other[0]["version"] == "1.0.1" and other[0]["pid"] == other[1]["pid"]
    assert other[0]["pid"] not in workers
    assert again[0]["pid"] == pids[8] and again[0]["count"] == 1  # a new run, a new Context
    failed = [t for t in tasks if t["status"] == "failed"]
    assert [t["worker_pid"] for t in failed] == [pids[0], pids[3], pids[5]]


def test_the_serverapp_pulls_replies_through_fast_pulls_on_a_superlink():
    """fedstale's ServerApp wraps Flower's HttpGrid (short object-pull backoff)
    and leaves any other Grid alone; the wrapper delegates the rest."""
    from flwr.superlink.grid.http_grid import HttpGrid

    from fedstale.fast_grid import PULL_BACKOFF, FastPullGrid, fast_pulls

    grid = HttpGrid(runtime_api_address="127.0.0.1:1", insecure=True, token="t")
    wrapped = fast_pulls(grid)
    assert isinstance(wrapped, FastPullGrid) and wrapped.node is grid.node
    other = object.__new__(FastPullGrid)  # any Grid that is not an HttpGrid
    assert fast_pulls(other) is other
    assert PULL_BACKOFF == (0.02, 0.5)
    assert "run_experiment(fast_pulls(grid)" in (Path(__file__).parents[1] / "fedstale" / "server_app.py").read_text()
