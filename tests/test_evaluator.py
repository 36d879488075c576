"""Evaluation: when, what goes into the metrics row, target accuracy, federated replies."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Result

from fedstale.simulation.local_grid import LocalGrid
from fedstale.strategies.evaluator import EvalJob, Evaluator
from fedstale.strategies.ledger import Ledger
from fedstale.strategies.placement import Placement
from fedstale.strategies.transport import Transport


def _row(version: int) -> dict:
    return Ledger().metrics_row(version=version, now=1.0, wall=0.0, central_epsilon=None)


def test_due_every_k_versions_and_at_the_budget():
    evaluator = Evaluator(every=5)
    assert [v for v in range(1, 13) if evaluator.due(v, num_rounds=12)] == [5, 10, 12]
    assert Evaluator(every=0).every == 1


def test_central_evaluation_fills_the_row_and_the_result():
    seen = []

    def evaluate_fn(version, arrays):
        seen.append((version, list(arrays.keys())))
        return MetricRecord({"accuracy": 0.75, "loss": 0.5, "attack-success": 0.1})

    evaluator = Evaluator(evaluate_fn=evaluate_fn)
    result = Result()
    arrays = ArrayRecord({"w": Array(np.zeros(1, np.float32))})
    row = evaluator.evaluate(_row(3), updates=17, arrays=lambda: arrays, federated=lambda: None, result=result)
    assert seen == [(3, ["w"])]
    assert (row["accuracy"], row["loss"], row["attack_success"], row["fed_accuracy"]) == (0.75, 0.5, 0.1, "")
    assert dict(result.evaluate_metrics_serverapp[3]) == {"accuracy": 0.75, "loss": 0.5, "attack-success": 0.1}
    assert (evaluator.last_version, evaluator.last_updates, evaluator.last_accuracy) == (3, 17, 0.75)
    assert evaluator.is_current(3, 17) and not evaluator.is_current(3, 18)
    assert evaluator.target_reached(0.75) == "target accuracy 0.75 reached"
    assert evaluator.target_reached(0.8) == "" and evaluator.target_reached(None) == ""


def test_federated_evaluation_only_when_asked():
    calls = []

    def federated():
        calls.append(1)
        return MetricRecord({"accuracy": 0.6, "loss": 1.2})

    result = Result()
    row = Evaluator().evaluate(_row(0), updates=0, arrays=ArrayRecord, federated=federated, result=result)
    assert calls == [] and row["fed_accuracy"] == "" and row["accuracy"] == ""
    row = Evaluator(federated_clients=2).evaluate(_row(4), updates=9, arrays=ArrayRecord, federated=federated, result=result)
    assert calls == [1] and (row["fed_accuracy"], row["fed_loss"]) == (0.6, 1.2)
    assert dict(result.evaluate_metrics_clientapp[4]) == {"accuracy": 0.6, "loss": 1.2}
    assert Evaluator().last_accuracy is None


def test_collect_returns_the_replies_with_content():
    """Two nodes: one answers with metrics, one with an error reply (left out)."""

    def app(message, context):
        if context.node_config["partition-id"] == 1:
            raise RuntimeError("no data")
        return Message(RecordDict({"m": MetricRecord({"accuracy": 0.5, "num-examples": 3})}), reply_to=message)

    grid = LocalGrid(app, num_nodes=2)
    nodes = grid.get_node_ids()
    placement = Placement(nodes, num_clients=2, ttl=60.0)
    transport = Transport(nodes, max_per_node=1, window=None, timeout=60.0)
    messages = [placement.message(c, "evaluate", ArrayRecord(), ConfigRecord(), 0) for c in (0, 1)]

    def pump():
        transport.push(grid)
        for job, reply in transport.pull(grid):
            job.finish(reply)

    replies = Evaluator.collect(messages, transport, pump, timeout=30.0)
    assert len(replies) == 1 and replies[0].content["m"]["accuracy"] == 0.5


def test_an_eval_job_finishes_with_or_without_a_reply():
    job = EvalJob(message=None, node_id=1, client_id=0)  # type: ignore[arg-type]
    assert not job.done and job.earliest_finish == float("-inf") and job.task_id == -1
    job.finish()
    assert job.done and job.reply is None
