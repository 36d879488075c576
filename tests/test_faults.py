"""Every fault kind on the in-process grid: rejected with its exact reason in
``clients.csv``, counted in ``metrics.csv``, the client dispatched again,
and the global model bit-identical to what it was before the bad reply.

``test_faults_and_bridge.py`` covers a raising client that recovers, NaN
and wrong-shape updates and lost replies; this file adds the kinds it does
not (error replies, Inf, wrong dtype, too few / extra arrays, no
``num-examples``, no ArrayRecord), checks the model after each rejected
reply, and reads the counts from the CSV files the run writes.

The faults are injected per message (a wrapped ClientApp, a grid that loses
messages), so every run here sends one task per message
(``comm.tasks_per_message: 1``); faults inside batched messages are in
``tests/test_batching.py``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict

from fedstale.builders import build_strategy, initial_arrays, run_strategy
from fedstale.client_app import app as fedstale_client_app
from fedstale.packing import packed_arrays_mod
from fedstale.results import RunRecorder, read_csv
from fedstale.simulation.local_grid import LocalGrid
from tests.helpers import config

MAX_RETRIES = 1  # a bad client fails twice, then is left out
ONE_TASK_PER_MESSAGE = {"comm__tasks_per_message": 1}


def _reply(message: Message, arrays: list[np.ndarray] | None, metrics: dict) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = ArrayRecord([np.ascontiguousarray(a) for a in arrays])
    return Message(content, reply_to=message)


def _arrays(message: Message) -> list[np.ndarray]:
    return [a.numpy().copy() for a in message.content["arrays"].values()]


def _raise(message):
    raise RuntimeError("disk full")


def _with(transform):
    return lambda m: _reply(m, transform(_arrays(m)), {"num-examples": 10})


def _set_first(value):
    def transform(arrays):
        arrays[0].flat[0] = value
        return arrays

    return transform


# Client id → (what its ClientApp does, the reason clients.csv must show).
# "{last}" is the model's last array name, "{n}" its number of arrays.
FAULTS = {
    1: (_raise, "error reply (2): RuntimeError: disk full"),
    2: (lambda m: Message(Error(code=7, reason="out of memory"), reply_to=m), "error reply (7): out of memory"),
    3: (_with(_set_first(np.nan)), "malformed update: update contains NaN or infinite values"),
    4: (_with(_set_first(np.inf)), "malformed update: update contains NaN or infinite values"),
    5: (_with(lambda a: a[:-1] + [a[-1][:-1]]), "malformed update: array '{last}' has shape (9,), expected (10,)"),
    6: (_with(lambda a: a[:-1] + [a[-1].astype(np.float64)]),
        "malformed update: array '{last}' has dtype float64, expected float32"),
    7: (_with(lambda a: a[:-1]), "malformed update: update has {n_minus} arrays, the model has {n}"),
    8: (_with(lambda a: a + [np.zeros(3, np.float32)]), "malformed update: update has {n_plus} arrays, the model has {n}"),
    9: (lambda m: _reply(m, _arrays(m), {"train-loss": 0.1}), "malformed update: MetricRecord has no 'num-examples'"),
    10: (lambda m: _reply(m, None, {"num-examples": 10}),
         "malformed update: reply must hold exactly one ArrayRecord, it holds 0"),
}


def faulty_app(message: Message, context) -> Message:
    """fedstale's ClientApp, except for the TRAIN messages of the clients in FAULTS,
    which it answers inside its packing mod (so a faulty reply is packed as
    fedstale's ClientApp packs any reply)."""

    def answer(message: Message, context) -> Message:
        client = message.content["config"].get("client-id") if "config" in message.content else None
        if message.metadata.message_type == "train" and client in FAULTS:
            return FAULTS[client][0](message)
        return fedstale_client_app(message, context)

    return packed_arrays_mod(message, context, answer)


class Watched:
    """Wraps ``strategy.process`` to keep the flat model around every failed task."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.original = strategy.process
        self.checked: list[tuple[int, bool]] = []
        strategy.process = self

    def __call__(self, task):
        before = self.strategy.model.clone()
        version = self.strategy.version
        changed = self.original(task)
        if task.failure is not None:
            same = torch.equal(before, self.strategy.model) and self.strategy.version == version
            self.checked.append((task.client_id, same and not changed))
        return changed


def _run(cfg, tmp_path, grid):
    recorder = RunRecorder(tmp_path / "run", {}, checkpoint_every=0)
    strategy = build_strategy(cfg, recorder)
    watched = Watched(strategy)
    result = run_strategy(strategy, grid, cfg)
    recorder.finish(result.arrays, plots=False)
    return result, strategy, watched, read_csv(tmp_path / "run" / "metrics.csv"), read_csv(tmp_path / "run" / "clients.csv")


def test_every_bad_reply_is_rejected_with_its_reason_and_leaves_the_model_untouched(tmp_path):
    cfg = config("fedasync", data__num_clients=12, strategy__concurrency=4, stop__num_updates=12,
                 evaluation__every=6, comm__max_retries=MAX_RETRIES, **ONE_TASK_PER_MESSAGE)
    result, strategy, watched, metrics, clients = _run(cfg, tmp_path, LocalGrid(faulty_app, num_nodes=2))
    names = list(initial_arrays(cfg).keys())
    expected = {
        c: reason.format(last=names[-1], n=len(names), n_minus=len(names) - 1, n_plus=len(names) + 1)
        for c, (_, reason) in FAULTS.items()
    }
    failed = [r for r in clients if r["accepted"] != "True"]
    for row in failed:
        client = int(row["client_id"])
        assert client in FAULTS, row
        if client == 1:  # the reason carries the ClientApp's traceback after the message
            assert row["reason"].startswith(expected[1] + "\n"), row["reason"]
        else:
            assert row["reason"] == expected[client]
        assert row["weight"] == ""
    # each bad client: dispatched again right away, max_retries + 1 failures, then left out
    assert Counter(int(r["client_id"]) for r in failed) == {c: MAX_RETRIES + 1 for c in FAULTS}
    assert strategy.pool.excluded == set(FAULTS)
    # counted in metrics.csv; the good clients carry the run to its budget
    assert int(metrics[-1]["failures"]) == len(failed) == len(FAULTS) * (MAX_RETRIES + 1)
    assert int(metrics[-1]["accepted"]) == int(metrics[-1]["version"]) == 12
    assert int(metrics[-1]["rejected"]) == 0  # rejected counts aggregation-time refusals, not faults
    assert int(metrics[-1]["updates"]) == len(clients)
    # the global model did not move on any failed task, bit for bit
    assert len(watched.checked) == len(failed)
    assert all(same for _, same in watched.checked), [c for c, same in watched.checked if not same]
    assert all(np.isfinite(a.numpy()).all() for a in result.arrays.values())


@pytest.mark.parametrize("client", [3, 6, 7])
def test_a_federation_of_bad_clients_never_changes_the_model(tmp_path, client):
    """Every client sends the same malformed update: all are left out, the run
    stops, and the final model is the initial one bit for bit. (With the
    default ``comm.fail_fast`` the run would stop at the second client's
    failure, see test_fail_fast.py; 0 keeps the retries this test is about.)"""
    cfg = config("fedasync", data__num_clients=2, strategy__concurrency=2, stop__num_updates=5,
                 comm__max_retries=MAX_RETRIES, comm__fail_fast=0, **ONE_TASK_PER_MESSAGE)
    bad, _ = FAULTS[client]

    def app(message, context):
        if message.metadata.message_type == "train":
            return bad(message)
        return fedstale_client_app(message, context)

    result, strategy, _, metrics, clients = _run(cfg, tmp_path, LocalGrid(app, num_nodes=2))
    initial = initial_arrays(cfg)
    for key, array in initial.items():
        assert np.array_equal(result.arrays[key].numpy(), array.numpy()), key
    assert strategy.stop_reason == "every client was left out after failures"
    assert int(metrics[-1]["version"]) == 0 and int(metrics[-1]["failures"]) == 4 == len(clients)


class LosingGrid(LocalGrid):
    """Loses every TRAIN reply of client 2 (a crashed SuperNode, a lost message)."""

    def _execute(self, message):
        cfg = next(iter(message.content.config_records.values()), {})
        if message.metadata.message_type == "train" and cfg.get("client-id") == 2:
            self.executed += 1
            return
        super()._execute(message)


def test_a_timeout_is_counted_in_metrics_and_the_client_is_retried(tmp_path):
    cfg = config("fedasync", data__num_clients=4, strategy__concurrency=2, stop__num_updates=8,
                 evaluation__every=4, comm__timeout=2.0, comm__max_retries=2, **ONE_TASK_PER_MESSAGE)
    grid = LosingGrid(fedstale_client_app, num_nodes=2)
    _, strategy, watched, metrics, clients = _run(cfg, tmp_path, grid)
    lost = [r for r in clients if r["client_id"] == "2"]
    assert [r["reason"] for r in lost] == ["no reply within 2s"] * 3
    assert all(float(r["wall_duration"]) >= 2.0 for r in lost)
    assert int(metrics[-1]["failures"]) == 3 and strategy.pool.excluded == {2}
    assert int(metrics[-1]["version"]) == 8
    assert [c for c, _ in watched.checked] == [2, 2, 2] and all(s for _, s in watched.checked)


@pytest.mark.parametrize("num_clients", [1, 2])
def test_a_failing_client_is_retried_after_an_exponential_backoff(tmp_path, num_clients):
    """comm.retry_backoff b = 0.3 s: client 0's first three tasks fail at once
    ("Node Unavailable", as from a SuperNode that is down); its retries come
    ≥ 0.3, 0.6 and (capped at retry_backoff_max) 0.8 s after each failure, so
    max_retries = 3 is not burnt in milliseconds, and the 4th task is merged. With one client
    nothing is in flight while it waits: the loop waits instead of stopping."""
    cfg = config("fedasync", data__num_clients=num_clients, strategy__concurrency=num_clients,
                 stop__num_updates=40, evaluation__every=20, delay__clock="wall",
                 comm__max_retries=3, comm__retry_backoff=0.3, comm__retry_backoff_max=0.8, **ONE_TASK_PER_MESSAGE)
    failures_left = {0: 3}

    def app(message, context):
        if message.metadata.message_type == "train":
            client = message.content["config"]["client-id"]
            if failures_left.get(client, 0) > 0:
                failures_left[client] -= 1
                return Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=message)
        return fedstale_client_app(message, context)

    _, strategy, _, metrics, clients = _run(cfg, tmp_path, LocalGrid(app, num_nodes=num_clients))
    mine = sorted((r for r in clients if r["client_id"] == "0"), key=lambda r: int(r["task_id"]))
    assert [r["accepted"] for r in mine[:4]] == ["False"] * 3 + ["True"]
    assert mine[0]["reason"] == "error reply (5): Error: Node Unavailable"
    # each failure is noticed at arrival_time (wall clock); the retry is sent
    # after the backoff and fails at once, so the gaps are the backoffs
    times = [float(r["arrival_time"]) for r in mine[:4]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6 and gaps[2] >= 0.8, gaps
    assert 0 not in strategy.pool.excluded
    assert int(metrics[-1]["failures"]) == 3 and int(metrics[-1]["version"]) == 40
