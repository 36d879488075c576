"""Failures (raising clients, bad updates, lost replies) and the NumPyClient bridge."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.client import NumPyClient

from flwr.app import ArrayRecord

from fedstale.builders import build_strategy, initial_arrays, train_config
from fedstale.client import TorchClient, build_client_app
from fedstale.client_app import app as fedstale_client_app
from fedstale.simulation.local_grid import LocalGrid, run_in_process
from fedstale.strategies import MemoryRecorder
from tests.helpers import config

ALWAYS_FAILS = 3
FAILS_ONCE = 5
SENDS_NAN = 4
WRONG_SHAPE = 6


class FaultyClient(NumPyClient):
    """TorchClient with scripted faults per client id.

    ``attempts`` (class level, this process) counts every fit call; the
    per-client ``Context.state`` counts successful fits only, because Flower
    keeps no state change from a ClientApp that raised.
    """

    attempts: Counter = Counter()
    successes: Counter = Counter()

    def __init__(self, context):
        self.inner = TorchClient(
            int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
        )
        self.client_id = self.inner.client_id
        self.state = context.state

    def get_properties(self, config):
        return self.inner.get_properties(config)

    def fit(self, parameters, config):
        FaultyClient.attempts[self.client_id] += 1
        if self.client_id == ALWAYS_FAILS:
            raise RuntimeError("disk full")
        if self.client_id == FAILS_ONCE and FaultyClient.attempts[self.client_id] == 1:
            raise RuntimeError("transient glitch")
        params, n, metrics = self.inner.fit(parameters, config)
        record = self.state.get("fits", ConfigRecord({"count": 0}))
        record["count"] = int(record["count"]) + 1
        self.state["fits"] = record
        FaultyClient.successes[self.client_id] += 1
        if self.client_id == SENDS_NAN:
            params[0] = np.full_like(params[0], np.nan)
        if self.client_id == WRONG_SHAPE:
            params[-1] = params[-1][:-1]
        return params, n, metrics


def test_failures_are_counted_retried_and_never_merged():
    """Raising clients, NaN and wrong-shape updates fail; the run goes on."""
    cfg = config(stop__num_updates=20, comm__max_retries=2)
    FaultyClient.attempts.clear()
    recorder = MemoryRecorder()
    app = build_client_app(FaultyClient)
    result, strategy = run_in_process(cfg, recorder, client_app=app, num_nodes=2)
    failures = [r for r in recorder.updates if not r["accepted"]]
    reasons = Counter(r["client_id"] for r in failures)
    # Permanently failing clients fail max_retries + 1 times in a row, then
    # are left out; the transient one fails once and then succeeds.
    assert reasons[ALWAYS_FAILS] == 3
    assert reasons[SENDS_NAN] == 3
    assert reasons[WRONG_SHAPE] == 3
    assert reasons[FAILS_ONCE] == 1
    assert set(reasons) == {ALWAYS_FAILS, SENDS_NAN, WRONG_SHAPE, FAILS_ONCE}
    text = {r["client_id"]: r["reason"] for r in failures}
    assert "RuntimeError: disk full" in text[ALWAYS_FAILS]
    assert text[SENDS_NAN] == "malformed update: update contains NaN or infinite values"
    assert text[WRONG_SHAPE] == "malformed update: array 'classifier.3.bias' has shape (9,), expected (10,)"
    assert strategy.pool.excluded == {ALWAYS_FAILS, SENDS_NAN, WRONG_SHAPE}
    # A failed client's retry is its very next dispatch.
    accepted_5 = [r for r in recorder.updates if r["client_id"] == FAILS_ONCE and r["accepted"]]
    assert accepted_5, "the transient client recovered"
    # Counts in metrics.csv and a finite final model.
    assert recorder.evaluations[-1]["failures"] == len(failures)
    assert strategy.version == 20
    assert all(np.isfinite(a.numpy()).all() for a in result.arrays.values())


def test_per_client_state_stays_with_its_client():
    """Each virtual client's Context.state counts exactly its own successful fits."""
    cfg = config(stop__num_updates=10)
    FaultyClient.attempts.clear()
    FaultyClient.successes.clear()
    recorder = MemoryRecorder()
    app = build_client_app(FaultyClient)
    grid = LocalGrid(app, num_nodes=3)

    strategy = build_strategy(cfg, recorder)
    strategy.start(grid, initial_arrays(cfg), num_rounds=10, timeout=60, train_config=train_config(cfg))
    # fit returned normally for these (accepted, rejected as malformed, or
    # still in flight when the run stopped).
    fits = FaultyClient.successes
    assert sum(fits.values()) >= sum(1 for r in recorder.updates if r["accepted"])
    stored = {}
    for context in grid.contexts.values():
        for key, record in context.state.items():
            client = int(key.split(".")[1])
            stored[client] = int(record["count"])
    assert stored == dict(fits)


class DroppingGrid(LocalGrid):
    """Loses every TRAIN reply of one client (a crashed node, a lost message)."""

    lost_client = 2

    def _execute(self, message):
        cfg = next(iter(message.content.config_records.values()), {})
        if message.metadata.message_type == "train" and cfg.get("client-id") == self.lost_client:
            self.executed += 1
            return
        super()._execute(message)


def test_lost_replies_time_out_and_are_counted():
    """A reply that never comes is a failure after ``comm.timeout`` seconds.

    One task per message (``comm.tasks_per_message: 1``): the grid loses
    whole messages, and each is then one task of the lost client.
    """
    cfg = config(stop__num_updates=8, comm__timeout=0.3, comm__max_retries=1, comm__tasks_per_message=1)
    recorder = MemoryRecorder()

    strategy = build_strategy(cfg, recorder)
    strategy.start(DroppingGrid(fedstale_client_app), initial_arrays(cfg), num_rounds=8, timeout=0.3, train_config=train_config(cfg))
    lost = [r for r in recorder.updates if r["client_id"] == DroppingGrid.lost_client]
    assert [r["reason"] for r in lost] == ["no reply within 0.3s", "no reply within 0.3s"]
    assert all(r["wall_duration"] >= 0.3 for r in lost)
    assert strategy.version == 8


class Linear(NumPyClient):
    """A user's NumPyClient with no torch: w ← w − lr·(w − target_c)."""

    def __init__(self, context):
        self.cid = int(context.node_config["partition-id"])

    def get_properties(self, config):
        return {"num-examples": 10 + self.cid}

    def fit(self, parameters, config):
        (w,) = parameters
        target = np.full_like(w, float(self.cid))
        return [w - 0.5 * (w - target)], 10 + self.cid, {"train-loss": float(np.abs(w - target).mean())}


def test_a_plain_numpy_client_plugs_in():
    """An existing NumPyClient runs unchanged under FedAvg; sizes reach the server."""

    cfg = config("fedavg", stop__num_updates=3, data__num_clients=4, strategy__concurrency=4)
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    grid = LocalGrid(build_client_app(Linear), num_nodes=2)
    result = strategy.start(grid, ArrayRecord([np.zeros(3, dtype=np.float32)]), num_rounds=3)
    # Every round: w ← Σ n_c (w − 0.5(w − c)) / Σ n_c = 0.5 w + 0.5 Σ n_c c / Σ n_c.
    sizes = np.array([10, 11, 12, 13])
    mean_target = float((sizes * np.arange(4)).sum() / sizes.sum())
    w = 0.0
    for _ in range(3):
        w = 0.5 * w + 0.5 * mean_target
    final = next(iter(result.arrays.values())).numpy()
    assert final == pytest.approx(np.full(3, w), abs=1e-6)
    assert sorted({r["num_examples"] for r in recorder.updates}) == [10, 11, 12, 13]
    assert {r["lr"] for r in recorder.updates} == {""}  # no lr in the config: none sent
