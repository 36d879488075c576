"""Several training tasks per Flower message: the wire format, the batch rule,
the transport's batches, the ClientApp's handler, and identical results.

Batching never changes what is trained or merged: the rows (wall-time
columns aside), the final model and every client's Context state are the
same for one task per message, N tasks and auto, on 2 or 3 SuperNodes. The
in-process :class:`FeedGrid` takes new messages only every few pulls, as
Flower's simulation engine takes one message per node every 0.1 s, so that
tasks wait for their node and batches form; the end-to-end twin of these
tests runs through ``flwr run`` in ``tests/test_e2e_flwr_run.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from fedstale.batching import (
    BATCH_MESSAGE_TYPE,
    BATCH_RECORD,
    pack_replies,
    pack_tasks,
    task_messages,
    task_replies,
)
from fedstale.builders import build_strategy, initial_arrays, run_strategy
from fedstale.client import TorchClient, build_client_app
from fedstale.client_app import app as fedstale_client_app
from fedstale.results import WALL_COLUMNS
from fedstale.simulation.local_grid import LocalGrid, _ensure_task_identity
from fedstale.strategies import MemoryRecorder
from fedstale.strategies.batches import BatchRule
from fedstale.strategies.task import Task
from fedstale.strategies.transport import Transport
from tests.helpers import config


def _message(content: dict, node: int = 7, group: str = "3") -> Message:
    _ensure_task_identity()
    return Message(RecordDict(content), dst_node_id=node, message_type="train", ttl=9.0, group_id=group)


def _pushed(message: Message, message_id: str) -> Message:
    message.metadata.__dict__["_message_id"] = message_id
    return message


def _model(value: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(3, value, np.float32))})


# ----------------------------------------------------------------------------
# The wire format
# ----------------------------------------------------------------------------


def test_a_batch_carries_each_task_and_one_copy_of_each_model():
    shared, other = _model(1.0), _model(2.0)
    messages = [
        _message({"arrays": shared, "config": ConfigRecord({"client-id": 0, "task-id": 4})}),
        _message({"arrays": shared, "config": ConfigRecord({"client-id": 2, "task-id": 5})}),
        _message({"arrays": other, "config": ConfigRecord({"client-id": 4, "task-id": 6})}, group="4"),
    ]
    batch = pack_tasks(messages)
    meta = batch.metadata
    assert (meta.message_type, meta.dst_node_id, meta.ttl, meta.group_id) == (BATCH_MESSAGE_TYPE, 7, 9.0, "3")
    assert sorted(batch.content.array_records) == ["0.arrays", "2.arrays"]  # one copy per model
    assert dict(batch.content[BATCH_RECORD]) == {"size": 3, "links": ["1.arrays=0.arrays"]}
    tasks = task_messages(_pushed(batch, "b1"))
    assert [t.metadata.message_type for t in tasks] == ["train"] * 3
    assert all(t.metadata.dst_node_id == 7 and t.metadata.group_id == "3" for t in tasks)
    for task, message in zip(tasks, messages):
        assert sorted(task.content) == ["arrays", "config"]
        assert dict(task.content["config"]) == dict(message.content["config"])
        assert task.content["arrays"]["w"].numpy().tolist() == message.content["arrays"]["w"].numpy().tolist()
    assert tasks[0].content["arrays"] is tasks[1].content["arrays"]


def test_a_batch_reply_is_split_into_one_reply_per_task():
    batch = _pushed(pack_tasks([_message({"config": ConfigRecord({"i": i})}) for i in range(3)]), "b1")
    tasks = task_messages(batch)
    replies = [
        Message(RecordDict({"arrays": _model(1.0), "metrics": MetricRecord({"num-examples": 5})}), reply_to=tasks[0]),
        Message(Error(code=2, reason="RuntimeError: disk full"), reply_to=tasks[1]),
        Message(RecordDict({"arrays": _model(3.0), "metrics": MetricRecord({"num-examples": 7})}), reply_to=tasks[2]),
    ]
    reply = _pushed(pack_replies(batch, replies, [0.1, 0.2, 0.3]), "r1")
    assert reply.metadata.reply_to_message_id == "b1"
    assert dict(reply.content[BATCH_RECORD])["seconds"] == [0.1, 0.2, 0.3]
    first, failed, last = task_replies(reply, ["b1/0", "b1/1", "b1/2"], ["3", "3", "4"])
    assert [m.metadata.reply_to_message_id for m in (first, failed, last)] == ["b1/0", "b1/1", "b1/2"]
    assert [m.metadata.message_type for m in (first, failed, last)] == ["train"] * 3
    assert last.metadata.group_id == "4" and last.metadata.message_id == "r1/2"
    assert sorted(first.content) == ["arrays", "metrics"] and dict(last.content["metrics"]) == {"num-examples": 7}
    assert failed.has_error() and (failed.error.code, failed.error.reason) == (2, "RuntimeError: disk full")
    # an error reply to the batch is each task's; a task the reply forgot is empty (a malformed update)
    lost = _pushed(Message(Error(code=5, reason="Node Unavailable"), reply_to=batch), "r2")
    assert all(m.error.code == 5 for m in task_replies(lost, ["b1/0", "b1/1"], ["3", "3"]))
    short = _pushed(pack_replies(batch, replies[:1], [0.1]), "r3")
    assert len(task_replies(short, ["b1/0", "b1/1"], ["3", "3"])[1].content) == 0


# ----------------------------------------------------------------------------
# The batch rule and the transport
# ----------------------------------------------------------------------------


def _task(task_id: int, node_id: int, finish: float, examples: int = 10) -> Task:
    task = Task(
        task_id=task_id, client_id=task_id, node_id=node_id, index=0, dispatch_version=0,
        dispatch_time=0.0, num_examples=examples, epochs=2.0, min_epochs=2.0, bytes_down=12,
        lr=None, seed=task_id,
    )
    task.earliest_finish = finish
    task.message = _message({"arrays": _model(0.0), "config": ConfigRecord({"task-id": task_id})}, node=node_id)
    return task


def test_the_batch_rule():
    tasks = [_task(i, 11, float(i)) for i in range(4)]
    fixed = BatchRule(3, nodes=[11])
    assert fixed.accepts(tasks[0]) and not fixed.accepts(_task(9, 22, 0.0))
    assert fixed.fits(tasks[:2], tasks[2]) and not fixed.fits(tasks[:3], tasks[3])
    assert not BatchRule(1, nodes=[11]).accepts(tasks[0])  # one task per message: plain messages
    auto = BatchRule(0, batch_seconds=0.5, nodes=[11])
    assert not auto.fits(tasks[:1], tasks[1])  # nothing measured yet: one task per message
    auto.observe_round_trip(tasks[0], 0.6)  # a single task's push-to-reply: 0.03 s per example-epoch
    assert auto.seconds_per_work == pytest.approx(0.03) and not auto.fits(tasks[:1], tasks[1])
    auto.observe_round_trip(tasks[0], 0.2)
    assert auto.seconds_per_work == pytest.approx(0.7 * 0.03 + 0.3 * 0.01)
    auto.observe(tasks[:2], [0.2, 0.2])  # the ClientApp's timings replace round trips: 0.4 s for 2 x 20
    assert auto.seconds_per_work == pytest.approx(0.01) and auto.measured
    auto.observe_round_trip(tasks[0], 5.0)  # round trips no longer count
    assert auto.seconds_per_work == pytest.approx(0.01)
    assert auto.work(tasks[0]) == 20.0 and auto.fits(tasks[:1], tasks[1]) and not auto.fits(tasks[:2], tasks[2])
    auto.observe(tasks[:1], [0.1])  # 0.005 s per unit: the average moves by 30%
    assert auto.seconds_per_work == pytest.approx(0.7 * 0.01 + 0.3 * 0.005)
    assert not auto.fits([], _task(8, 11, 0.0, examples=100))  # a task over the budget goes alone


class RecordingGrid:
    """Accepts every message and answers none; keeps what was pushed."""

    def __init__(self, refuse: frozenset[int] = frozenset()):
        self.pushed: list[Message] = []
        self.refuse = refuse

    def push_messages(self, messages):
        ids = []
        for message in messages:
            self.pushed.append(message)
            ids.append("" if message.metadata.dst_node_id in self.refuse else f"m{len(self.pushed)}")
        return ids

    def pull_messages(self, message_ids):
        return []


def test_a_free_node_gets_its_waiting_tasks_in_one_message_earliest_finish_first():
    transport = Transport([11, 22], max_per_node=1, window=None, timeout=60.0, batching=BatchRule(3, nodes=[11]))
    assert transport.batching.hold == 0.0  # holds are for Flower's simulation engine (below)
    # tasks 0 and 3 for node 22, the others for node 11
    tasks = [_task(i, 11 if i % 3 else 22, finish) for i, finish in enumerate([5.0, 4.0, 1.0, 2.0, 3.0, 0.5])]
    for task in tasks:
        transport.enqueue(task)
    grid = RecordingGrid()
    assert transport.push(grid) == []
    batch, plain = grid.pushed
    # node 11 (takes batches): its 3 earliest tasks, in (earliest_finish, task_id) order; node 22: one plain task
    assert batch.metadata.message_type == BATCH_MESSAGE_TYPE and batch.metadata.dst_node_id == 11
    assert [int(t.content["config"]["task-id"]) for t in task_messages(_pushed(batch, "m1"))] == [5, 2, 4]
    assert plain is tasks[3].message and plain.metadata.message_type == "train"
    assert [tasks[i].message_id for i in (5, 2, 4, 3)] == ["m1/0", "m1/1", "m1/2", "m2"]
    assert (transport.messages_pushed, transport.tasks_pushed, transport.in_flight) == (2, 4, 2)
    assert transport.push(grid) == [] and len(grid.pushed) == 2  # the rest waits for a free node
    # the batch's reply comes back as one reply per task, in the batch's order
    reply = _pushed(pack_replies(_pushed(batch, "m1"), [
        Message(RecordDict({"metrics": MetricRecord({"num-examples": i})}), reply_to=t)
        for i, t in enumerate(task_messages(batch))
    ], [0.1, 0.1, 0.1]), "r1")
    grid.pull_messages = lambda ids: [reply] if "m1" in ids else []
    pulled = transport.pull(grid)
    assert [(job.task_id, r.metadata.reply_to_message_id) for job, r in pulled] == [(5, "m1/0"), (2, "m1/1"), (4, "m1/2")]
    assert [dict(r.content["metrics"])["num-examples"] for _, r in pulled] == [0, 1, 2]
    grid.pull_messages = lambda ids: []
    transport.push(grid)
    assert grid.pushed[-1] is tasks[1].message  # a message with one task is the plain TRAIN message


def test_on_the_simulation_engine_a_free_node_waits_for_other_replies_within_the_hold(monkeypatch):
    """A batch node that just answered waits for the replies still in flight,
    at most ``hold`` after its previous push, so their new tasks can join it."""
    now = [100.0]
    monkeypatch.setattr("fedstale.strategies.transport.time.monotonic", lambda: now[0])
    transport = Transport([11, 22], max_per_node=1, window=None, timeout=60.0,
                          batching=BatchRule(4, nodes=[11, 22], hold=0.075))
    grid = RecordingGrid()
    first = [_task(0, 11, 1.0), _task(1, 22, 2.0)]
    for task in first:
        transport.enqueue(task)
    transport.push(grid)
    reply = Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=_pushed(first[0].message, "m1"))
    grid.pull_messages = lambda ids: [reply] if "m1" in ids else []
    now[0] += 0.02
    transport.pull(grid)  # node 11 answered, node 22's reply is still due
    grid.pull_messages = lambda ids: []
    transport.enqueue(_task(2, 11, 3.0))
    assert transport.push(grid) == [] and len(grid.pushed) == 2  # held
    transport.enqueue(_task(3, 11, 4.0))
    now[0] += 0.054  # 0.074 s after node 11's push: still held
    transport.push(grid)
    assert len(grid.pushed) == 2
    now[0] += 0.002  # past the hold: both go, in one message
    transport.push(grid)
    assert len(grid.pushed) == 3
    assert [int(t.content["config"]["task-id"]) for t in task_messages(_pushed(grid.pushed[-1], "m3"))] == [2, 3]
    # with no other reply due, nothing can join: no hold
    alone = Transport([11], max_per_node=1, window=None, timeout=60.0, batching=BatchRule(4, nodes=[11], hold=0.075))
    task = _task(5, 11, 1.0)
    alone.enqueue(task)
    alone.push(grid)
    reply = Message(RecordDict(), reply_to=_pushed(task.message, task.message_id))
    grid.pull_messages = lambda ids: [reply]
    alone.pull(grid)
    alone.enqueue(_task(6, 11, 2.0))
    alone.push(grid)
    assert grid.pushed[-1].content["config"]["task-id"] == 6


def test_a_single_tasks_reply_teaches_the_auto_rule_its_fit_seconds():
    transport = Transport([11], max_per_node=1, window=None, timeout=60.0, batching=BatchRule(0, nodes=[11]))
    task = _task(0, 11, 1.0)  # 10 examples x 2 epochs
    transport.enqueue(task)
    grid = RecordingGrid()
    transport.push(grid)
    assert grid.pushed[0] is task.message  # nothing measured: one task, the plain message
    reply = Message(RecordDict({"metrics": MetricRecord({"num-examples": 10, "fit-seconds": 0.2})}),
                    reply_to=_pushed(task.message, task.message_id))
    grid.pull_messages = lambda ids: [reply]
    transport.pull(grid)
    assert transport.batching.measured and transport.batching.seconds_per_work == pytest.approx(0.01)


def test_a_batch_that_cannot_be_pushed_or_times_out_fails_each_of_its_tasks(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("fedstale.strategies.transport.time.monotonic", lambda: now[0])
    transport = Transport([11], max_per_node=1, window=None, timeout=5.0, batching=BatchRule(0, nodes=[11]))
    transport.batching.seconds_per_work = 1e-6
    first = [_task(i, 11, float(i)) for i in range(3)]
    for task in first:
        transport.enqueue(task)
    assert transport.push(RecordingGrid(refuse=frozenset({11}))) == first
    for task in first:
        transport.enqueue(task)
    transport.push(RecordingGrid())
    now[0] += 6.0
    assert transport.expire() == first and transport.in_flight == 0


# ----------------------------------------------------------------------------
# The ClientApp's handler
# ----------------------------------------------------------------------------


class Counting(NumPyClient):
    """Adds 1 to the model; counts its fits in its Context state; client 1 raises."""

    def __init__(self, context):
        self.cid = int(context.node_config["partition-id"])
        self.state = context.state

    def get_properties(self, config):
        return {"num-examples": 10}

    def fit(self, parameters, config):
        if self.cid == 1:
            raise RuntimeError("disk full")
        record = self.state.get("fits", ConfigRecord({"count": 0}))
        self.state["fits"] = ConfigRecord({"count": int(record["count"]) + 1})
        return [p + 1 for p in parameters], 10, {}


def _writes_then_fails(message, context, call_next):
    """A mod that writes node state before the task, and fails client 2's after training."""
    context.state[f"mod.{message.content['config']['client-id']}"] = ConfigRecord({"seen": 1})
    reply = call_next(message, context)
    if int(message.content["config"]["client-id"]) == 2:
        raise ValueError("late failure")
    return reply


def test_the_clientapp_runs_each_task_of_a_batch_alone_with_its_clients_state():
    seen = []

    def spy(message, context, call_next):
        seen.append(message.metadata.message_type)
        return call_next(message, context)

    app = build_client_app(Counting, mods=[spy], train_mods=[_writes_then_fails])
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    model = _model(0.0)
    tasks = [
        _message({"arrays": model, "config": ConfigRecord({"client-id": c, "num-clients": 4})})
        for c in (0, 1, 2, 3, 0)
    ]
    batch = _pushed(pack_tasks(tasks), "b1")
    reply = _pushed(app(batch, context), "r1")
    assert seen == ["train"] * 5  # app-wide mods see each task, not the batch
    replies = task_replies(reply, [f"b1/{i}" for i in range(5)], ["3"] * 5)
    assert [r.has_error() for r in replies] == [False, True, True, False, False]
    assert replies[1].error.code == 2 and replies[1].error.reason == "RuntimeError: disk full"
    assert replies[2].error.reason == "ValueError: late failure"
    assert replies[4].content["arrays"]["w"].numpy().tolist() == [1.0, 1.0, 1.0]
    # each client's state as if its tasks came one by one; a failed task left none behind
    state = {k: dict(v) for k, v in context.state.items()}
    assert state == {
        "mod.0": {"seen": 1}, "client.0.fits": {"count": 2},
        "mod.3": {"seen": 1}, "client.3.fits": {"count": 1},
    }
    assert dict(reply.content[BATCH_RECORD])["size"] == 5 and len(dict(reply.content[BATCH_RECORD])["seconds"]) == 5


# ----------------------------------------------------------------------------
# Whole runs: identical results, one task per message for a stock ClientApp
# ----------------------------------------------------------------------------


class FeedGrid(LocalGrid):
    """A LocalGrid that takes new messages only every ``period``-th pull (then all
    of them), as Flower's engine takes one per node every 0.1 s; keeps what it ran."""

    def __init__(self, client_app, period: int = 3, **options):
        super().__init__(client_app, **options)
        self.period, self.pulls, self.ran = period, 0, []

    def pull_messages(self, message_ids):
        self.pulls += 1
        if self.pulls % self.period == 0:
            while self._pending:
                message = self._pending.pop(0)
                self.ran.append(message)
                self._execute(message)
        wanted = set(message_ids)
        return [self._replies.pop(i) for i in list(self._replies) if i in wanted]


def _run(cfg, app=fedstale_client_app, **grid_options):
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    grid = FeedGrid(app, **grid_options)
    result = run_strategy(strategy, grid, cfg)
    drop = set(WALL_COLUMNS) | {"node"}  # the node column: which of the N nodes hosts the client
    rows = (
        [{k: v for k, v in r.items() if k not in drop} for r in recorder.evaluations],
        [{k: v for k, v in r.items() if k not in drop} for r in recorder.updates],
    )
    model = torch.cat([torch.from_numpy(a.numpy()).flatten() for a in result.arrays.values()])
    return rows, model, client_states(grid), strategy, grid


def client_states(grid: FeedGrid) -> dict[int, tuple[int, dict]]:
    """Client id → (tasks it trained, its state: ``client.<id>.*`` records as lists)."""
    trained: dict[int, int] = {}
    for message in grid.ran:
        if message.metadata.message_type.startswith("train"):
            tasks = task_messages(message) if message.metadata.message_type == BATCH_MESSAGE_TYPE else [message]
            for task in tasks:
                client = int(task.content["config"]["client-id"])
                trained[client] = trained.get(client, 0) + 1
    states: dict[int, tuple[int, dict]] = {c: (n, {}) for c, n in trained.items()}
    for context in grid.contexts.values():
        for key, record in context.state.items():
            _, client, name = key.split(".", 2)
            states[int(client)][1][name] = {
                k: np.asarray(v.numpy() if hasattr(v, "numpy") else v).tolist() for k, v in record.items()
            }
    return states


def _same_states(one: dict, other: dict) -> int:
    """Check that clients that trained as many tasks in both runs have the same state; return how many."""
    same = [c for c in one if c in other and one[c][0] == other[c][0]]
    for client in same:
        assert one[client][1] == other[client][1], client
    # the others trained one more task in one run: pushed with a batch, in flight when the run stopped
    assert all(abs(one[c][0] - other.get(c, (0,))[0]) <= 1 for c in one)
    return len(same)


def _batch_sizes(grid: FeedGrid) -> list[int]:
    return [
        len(task_messages(m)) if m.metadata.message_type == BATCH_MESSAGE_TYPE else 1
        for m in grid.ran
        if m.metadata.message_type.startswith("train")
    ]


CASES = {
    "default": ("default", {"stop__num_updates": 20}),
    "fedavg": ("fedavg", {"stop__num_updates": 3}),
    "compression": ("compression", {"stop__num_updates": 20}),
    "dp_sgd": ("dp_sgd", {"stop__num_updates": 3}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rows_model_and_client_state_are_the_same_for_any_tasks_per_message(name):
    """1, 3 and auto tasks per message, on 2 and 3 SuperNodes: the same rows
    (wall-time columns aside), the same final model bit for bit and the same
    state of every client (error-feedback residuals, DP accountants)."""
    shipped, overrides = CASES[name]
    runs = {
        (tasks, nodes): _run(config(shipped, comm__tasks_per_message=tasks, **overrides), num_nodes=nodes)
        for tasks, nodes in ((1, 2), (3, 2), (0, 2), (3, 3))
    }
    rows, model, states, _, _ = runs[(1, 2)]
    assert rows[1], "the run trained"
    for key, (other_rows, other_model, other_states, strategy, grid) in runs.items():
        assert other_rows == rows, key
        assert torch.equal(other_model, model), key
        assert _same_states(states, other_states) >= len(states) // 2, key
        sizes = _batch_sizes(grid)
        assert sum(sizes) == strategy.transport.tasks_pushed and len(sizes) == strategy.transport.messages_pushed
        if key[0] == 1:
            assert max(sizes) == 1 and strategy.placement.batch_nodes == set(strategy.placement.nodes)
        elif key[0] == 3:
            assert 1 < max(sizes) <= 3, key  # batches formed, none above the cap
    names = {name for _, state in states.values() for name in state}
    if name == "compression":
        assert names == {"compression-residual"}
    if name == "dp_sgd":
        assert names == {"dp-accountant"}


def test_a_failing_client_fails_alone_in_a_batch_with_the_same_rows():
    """A raising client is retried and left out exactly as with one task per
    message; only its reason loses the in-process grid's traceback."""
    app = build_client_app(
        lambda context: Counting(context)
        if int(context.node_config["partition-id"]) == 1
        else TorchClient(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    )
    single, batched = (
        _run(config(stop__num_updates=15, comm__tasks_per_message=n), app=app) for n in (1, 4)
    )
    assert max(_batch_sizes(batched[4])) > 1
    for kind in (0, 1):
        for one, other in zip(single[0][kind], batched[0][kind]):
            if kind == 1:
                assert one["reason"].split("\n")[0] == other["reason"]
                one, other = dict(one, reason=""), dict(other, reason="")
            assert one == other
    failed = [r for r in batched[0][1] if r["client_id"] == 1]
    assert [r["reason"] for r in failed] == ["error reply (2): RuntimeError: disk full"] * 3
    assert batched[3].pool.excluded == {1}
    assert torch.equal(single[1], batched[1])


def test_a_stock_clientapp_gets_one_task_per_message():
    """A ClientApp with only ``@app.train()`` (no query handler) never sees a batch."""
    app = ClientApp()

    @app.train()
    def train(message, context):
        arrays = message.content["arrays"]
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10})}), reply_to=message)

    cfg = config(data__num_clients=8, strategy__concurrency=6, stop__num_updates=6, comm__tasks_per_message=4)
    _, model, _, strategy, grid = _run(cfg, app=app)
    assert strategy.placement.batch_nodes == set()
    trained = [m for m in grid.ran if m.metadata.message_type.startswith("train")]
    assert {m.metadata.message_type for m in trained} == {"train"}
    assert len(trained) == strategy.transport.messages_pushed == strategy.transport.tasks_pushed >= 30
    assert torch.equal(model, torch.cat([torch.from_numpy(a.numpy()).flatten() for a in initial_arrays(cfg).values()]))
