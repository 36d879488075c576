"""Replies in, failures noticed: reading a reply, the courier's pump, timeouts and failed pushes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedstale.aggregation.vectors import ModelCodec, UpdateError
from fedstale.client.compression import CompressionSettings, compress
from fedstale.simulation.clock import VirtualClock
from fedstale.simulation.delays import DelayModel, make_distribution
from fedstale.simulation.local_grid import LocalGrid, _ensure_task_identity
from fedstale.strategies.courier import Courier
from fedstale.strategies.evaluator import EvalJob
from fedstale.strategies.inflight import InFlight
from fedstale.strategies.placement import Placement
from fedstale.strategies.replies import decode_model, read_reply, single_record
from fedstale.strategies.task import Task
from fedstale.strategies.transport import Transport

CODEC = ModelCodec(ArrayRecord({"w": Array(np.zeros(3, np.float32))}))


def _task(task_id: int = 0, client_id: int = 0, node_id: int = 0) -> Task:
    return Task(
        task_id=task_id, client_id=client_id, node_id=node_id, index=0, dispatch_version=0, dispatch_time=0.0,
        num_examples=10, epochs=1.0, min_epochs=1.0, bytes_down=CODEC.nbytes, lr=None, seed=1,
    )


def _request() -> Message:
    _ensure_task_identity()
    message = Message(RecordDict(), dst_node_id=5, message_type="train")
    message.metadata.__dict__["_message_id"] = "m"
    return message


def _reply(arrays=None, metrics=None) -> Message:
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = ArrayRecord({"w": Array(np.asarray(arrays, np.float32))})
    if metrics is not None:
        content["metrics"] = MetricRecord(metrics)
    return Message(content, reply_to=_request())


def _decode(task, arrays):
    return decode_model(arrays, CODEC, lambda: torch.zeros(3))


def test_an_intact_reply_fills_the_task():
    task = _task()
    assert read_reply(task, _reply([1, 2, 3], {"num-examples": 8, "train-loss": 0.5}), _decode) is None
    assert task.params.tolist() == [1.0, 2.0, 3.0]
    assert task.metrics == {"num-examples": 8, "train-loss": 0.5}
    assert task.bytes_up == len(Array(np.zeros(3, np.float32)).data)


@pytest.mark.parametrize(
    ("reply", "reason", "repeats"),
    [
        (lambda: Message(Error(code=2, reason="boom"), reply_to=_request()), "error reply (2): boom", True),
        (lambda: Message(Error(code=5, reason="down"), reply_to=_request()), "error reply (5): down", False),
        (lambda: _reply([1, 2, 3], {"loss": 1.0}), "malformed update: MetricRecord has no 'num-examples'", True),
        (lambda: _reply(None, {"num-examples": 1}),
         "malformed update: reply must hold exactly one ArrayRecord, it holds 0", True),
        (lambda: _reply([1, 2], {"num-examples": 1}),
         "malformed update: array 'w' has shape (2,), expected (3,)", True),
    ],
)
def test_a_failed_reply_says_why_and_whether_a_retry_repeats_it(reply, reason, repeats):
    task = _task()
    assert read_reply(task, reply(), _decode) == reason
    assert task.failure_repeats is repeats and task.params is None and task.metrics == {}


def test_a_compressed_reply_is_added_to_its_base_model():
    arrays, _ = compress(np.array([0.5, 0.0, -1.0]), CompressionSettings("topk", 1.0))
    local = decode_model(arrays, CODEC, lambda: torch.tensor([1.0, 1.0, 1.0]))
    assert local.tolist() == [1.5, 1.0, 0.0]
    with pytest.raises(UpdateError, match="NaN or infinite"):
        decode_model(arrays, CODEC, lambda: torch.tensor([np.inf, 0.0, 0.0]))
    with pytest.raises(UpdateError, match="exactly one MetricRecord, it holds 2"):
        single_record({"a": 1, "b": 2}, "MetricRecord")


def _clock() -> VirtualClock:
    clock = VirtualClock(DelayModel(speed=make_distribution("constant", value=0.5), seed=0))
    clock.start()
    return clock


def test_pump_delivers_replies_with_their_finish_time_and_fails_the_rest():
    """Node 0 trains (10 examples at 0.5 s each: t = 5 s + transfer), node 1's ClientApp raises."""

    def app(message, context):
        if context.node_config["partition-id"] == 1:
            raise RuntimeError("disk full")
        return Message(
            RecordDict({"a": ArrayRecord({"w": Array(np.ones(3, np.float32))}), "m": MetricRecord({"num-examples": 10})}),
            reply_to=message,
        )

    grid = LocalGrid(app, num_nodes=2, per_pull=2)
    nodes = grid.get_node_ids()
    placement = Placement(nodes, num_clients=2, ttl=60.0)
    transport = Transport(nodes, max_per_node=1, window=None, timeout=60.0)
    clock, inflight = _clock(), InFlight()
    courier = Courier(transport, clock, inflight, _decode, timeout=60.0)
    tasks = [_task(i, client_id=i, node_id=nodes[i]) for i in (0, 1)]
    for task in tasks:
        clock.schedule(task)
        task.message = placement.message(task.client_id, "train", ArrayRecord(), ConfigRecord(), 0, {"task-id": task.task_id})
        transport.enqueue(task)
        inflight.add(task)
    courier.pump(grid)
    good, bad = tasks
    assert good.failure is None and good.params.tolist() == [1.0, 1.0, 1.0]
    assert good.finish_time == pytest.approx(5.0 + clock.delays.communication_time(good.bytes_down, good.bytes_up))
    assert inflight.claim(good.message_id) is good and inflight.claim(bad.message_id) is bad
    assert bad.failure.startswith("error reply (2): RuntimeError: disk full") and bad.failure_repeats
    assert bad.finish_time == pytest.approx(bad.earliest_finish)  # ends when its planned work would have


class _SilentGrid:
    """A Grid whose messages are accepted for ``nodes`` and never answered."""

    def __init__(self, nodes):
        self.nodes = set(nodes)
        self.pushed = 0

    def push_messages(self, messages):
        ids = []
        for message in messages:
            self.pushed += 1
            ids.append(f"m{self.pushed}" if message.metadata.dst_node_id in self.nodes else None)
        return ids

    def pull_messages(self, message_ids):
        return []


def test_timeouts_and_failed_pushes_fail_the_task_and_finish_eval_jobs(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    _ensure_task_identity()
    grid = _SilentGrid({1})
    transport = Transport([1, 99], max_per_node=1, window=None, timeout=5.0)
    courier = Courier(transport, _clock(), InFlight(), _decode, timeout=5.0)
    placement = Placement([1, 99], num_clients=2, ttl=60.0)
    late, lost = _task(0, 0, 1), _task(1, 1, 99)
    for item, client in ((late, 0), (lost, 1)):
        item.message = placement.message(client, "train", ArrayRecord(), ConfigRecord(), 0)
        courier.clock.schedule(item)
        transport.enqueue(item)
    courier.pump(grid)
    assert lost.failure == "message could not be pushed" and lost.finish_time is not None
    assert late.failure is None and late.message_id == "m1"
    now[0] += 6.0
    courier.pump(grid)
    assert late.failure == "no reply within 5s" and late.finish_time == late.earliest_finish
    job = EvalJob(message=placement.message(0, "evaluate", ArrayRecord(), ConfigRecord(), 0), node_id=1, client_id=0)
    transport.enqueue(job)
    courier.pump(grid)
    assert not job.done
    now[0] += 6.0
    courier.pump(grid)
    assert job.done and job.reply is None
