"""Fairness and targets wired into runs (``evaluation.fairness``, ``evaluation.targets``).

Per-client accuracies on each client's held-out split (the server's
``evaluate_fn``), their rows in ``client_accuracy.csv`` and summary in
``metrics.csv``, the split left out of the clients' training, and the first
evaluation reaching each target in ``targets.csv``. With both off nothing
changes (``tests/test_same_rows.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord
from flwr.serverapp.strategy import Result

from fedstale.builders import client_held_out_sets, make_evaluate_fn, partition_spec, train_config
from fedstale.config import ConfigError
from fedstale.data import client_partitions, load_split
from fedstale.fairness import (
    CLIENT_ACCURACY_COLUMNS,
    CLIENT_ACCURACY_FILE,
    TARGETS_COLUMNS,
    TARGETS_FILE,
    held_out_split,
    parse_targets,
    summarize,
)
from fedstale.results import METRICS_COLUMNS, read_csv
from fedstale.strategies import MemoryRecorder
from fedstale.strategies.evaluator import Evaluator
from fedstale.strategies.ledger import Ledger
from tests.helpers import CONFIGS, TINY_OVERRIDES, config, run

TINY = {k.replace(".", "__"): v for k, v in TINY_OVERRIDES.items()}


def _constant_model(cfg, label: int) -> ArrayRecord:
    """The CNN with every weight 0 and the last bias one-hot: it always predicts ``label``."""
    from fedstale.builders import initial_arrays

    state = {k: np.zeros_like(v.numpy()) for k, v in initial_arrays(cfg).items()}
    state["classifier.3.bias"][label] = 1.0
    return ArrayRecord({k: Array(v) for k, v in state.items()})


def test_per_client_accuracy_of_a_constant_model_is_each_clients_label_share():
    cfg = config(data__num_clients=5, strategy__concurrency=3, evaluation__fairness=True, evaluation__held_out=0.25)
    d = cfg.data
    data = load_split(d.dataset, d.test_fraction, d.seed, d.server_val_size, d.path)
    partitions = client_partitions(d.dataset, d.test_fraction, partition_spec(cfg), d.server_val_size, d.path)
    record = make_evaluate_fn(cfg)(0, _constant_model(cfg, label=3))
    expected_sizes, expected_acc = [], []
    for cid, idx in enumerate(partitions):
        _, held = held_out_split(len(idx), 0.25, d.seed, cid)
        labels = data.y_train[idx][held]
        expected_sizes.append(len(labels))
        expected_acc.append(float(np.mean(labels == 3)))
    assert list(record["client-examples"]) == expected_sizes
    assert list(record["client-accuracy"]) == pytest.approx(expected_acc, abs=1e-12)
    assert len(set(expected_acc)) > 1  # the clients differ, so the check means something
    assert record["accuracy"] == pytest.approx(float(np.mean(data.y_test == 3)))


def test_without_fairness_the_evaluation_and_the_clients_config_are_unchanged():
    cfg = config(data__num_clients=5, strategy__concurrency=3)
    record = make_evaluate_fn(cfg)(0, _constant_model(cfg, label=3))
    assert set(record.keys()) == {"accuracy", "loss"}
    assert "held-out" not in train_config(cfg)
    assert train_config(config(evaluation__fairness=True, evaluation__held_out=0.3))["held-out"] == 0.3


def test_evaluator_writes_one_row_per_client_and_their_summary():
    accuracies = [1.0, 0.5, 0.0, 0.5]

    def evaluate_fn(version, arrays):
        return MetricRecord(
            {"accuracy": 0.6, "loss": 1.0, "client-accuracy": accuracies, "client-examples": [4, 2, 3, 2]}
        )

    evaluator, recorder = Evaluator(evaluate_fn=evaluate_fn), MemoryRecorder()
    row = Ledger().metrics_row(version=7, now=12.5, wall=0.0, central_epsilon=None)
    evaluator.evaluate(row, updates=9, arrays=ArrayRecord, federated=lambda: None, result=Result())
    evaluator.report(row, recorder)
    assert recorder.client_accuracy == [
        {"version": 7, "virtual_time": 12.5, "client_id": 0, "num_examples": 4, "accuracy": 1.0},
        {"version": 7, "virtual_time": 12.5, "client_id": 1, "num_examples": 2, "accuracy": 0.5},
        {"version": 7, "virtual_time": 12.5, "client_id": 2, "num_examples": 3, "accuracy": 0.0},
        {"version": 7, "virtual_time": 12.5, "client_id": 3, "num_examples": 2, "accuracy": 0.5},
    ]
    # mean 0.5, std sqrt(0.125), worst 10 % = the single worst client, Jain 1/(4*1.5) * 4 = 2/3
    assert row["client_acc_mean"] == 0.5
    assert row["client_acc_std"] == pytest.approx(0.125**0.5)
    assert row["client_acc_worst10"] == 0.0
    assert row["client_acc_jain"] == pytest.approx(2 / 3)
    assert recorder.evaluations == [row]


def test_targets_are_recorded_at_the_first_evaluation_reaching_them():
    accuracies = iter([0.5, 0.85, 0.8, 0.95, 0.99])
    evaluator = Evaluator(
        evaluate_fn=lambda v, a: MetricRecord({"accuracy": next(accuracies)}), targets=parse_targets("0.9,0.8")
    )
    recorder = MemoryRecorder()
    for version in range(5):
        row = Ledger().metrics_row(version=version, now=10.0 * version, wall=0.0, central_epsilon=None)
        row["updates"] = 3 * version
        evaluator.evaluate(row, updates=3 * version, arrays=ArrayRecord, federated=lambda: None, result=Result())
        evaluator.report(row, recorder)
    assert recorder.targets == [
        {"target": 0.8, "version": 1, "virtual_time": 10.0, "updates": 3},
        {"target": 0.9, "version": 3, "virtual_time": 30.0, "updates": 9},
    ]
    assert evaluator.reached == [0.8, 0.9]
    assert all(row.get("client_acc_mean", "") == "" for row in recorder.evaluations)


def test_targets_must_be_accuracies():
    assert parse_targets("") == ()
    assert parse_targets(" 0.9, 0.8,0.9 ") == (0.8, 0.9)
    with pytest.raises(ConfigError, match="evaluation.targets"):
        config(evaluation__targets="0.8,1.5")
    with pytest.raises(ConfigError, match="evaluation.targets"):
        config(evaluation__targets="high")
    with pytest.raises(ConfigError, match="evaluation.held_out"):
        config(evaluation__held_out=1.0)


def test_a_run_with_fairness_writes_client_accuracy_and_never_trains_on_the_held_out_split(tmp_path):
    from fedstale.client_app import app as client_app
    from fedstale.server_app import run_experiment
    from fedstale.simulation.local_grid import LocalGrid

    cfg = config(
        **TINY, run__output_dir=str(tmp_path), evaluation__fairness=True, evaluation__targets="0.01,0.99"
    )
    run_dir = run_experiment(LocalGrid(client_app, num_nodes=2), cfg, CONFIGS / "default.yaml")
    metrics, clients = read_csv(run_dir / "metrics.csv"), read_csv(run_dir / "clients.csv")
    per_client = read_csv(run_dir / CLIENT_ACCURACY_FILE)
    assert list(per_client[0].keys()) == list(CLIENT_ACCURACY_COLUMNS)
    assert list(metrics[0].keys()) == list(METRICS_COLUMNS)
    n = cfg.data.num_clients
    assert len(per_client) == n * len(metrics)
    for i, row in enumerate(metrics):
        rows = per_client[i * n : (i + 1) * n]
        assert [r["version"] for r in rows] == [row["version"]] * n
        assert [int(r["client_id"]) for r in rows] == list(range(n))
        summary = summarize([float(r["accuracy"]) for r in rows])
        for column, value in (
            ("client_acc_mean", summary.mean),
            ("client_acc_std", summary.std),
            ("client_acc_worst10", summary.worst_mean),
            ("client_acc_jain", summary.jain),
        ):
            assert float(row[column]) == pytest.approx(value, rel=1e-9, abs=1e-12)
    sizes = [len(idx) for idx in client_partitions(
        cfg.data.dataset, cfg.data.test_fraction, partition_spec(cfg), cfg.data.server_val_size, cfg.data.path
    )]
    held = {int(r["client_id"]): int(r["num_examples"]) for r in per_client}
    assert held == {cid: len(x) for cid, (x, _) in enumerate(client_held_out_sets(cfg))}
    assert clients and all(
        int(r["num_examples"]) == sizes[int(r["client_id"])] - held[int(r["client_id"])] for r in clients
    )
    targets = read_csv(run_dir / TARGETS_FILE)
    assert list(targets[0].keys()) == list(TARGETS_COLUMNS)
    assert [(r["target"], r["version"], r["updates"]) for r in targets] == [("0.01", "0", "0")]


def test_a_run_without_fairness_or_targets_reports_neither():
    cfg = config(**(TINY | {"stop__num_updates": 2}))
    _, _, recorder = run(cfg)
    assert recorder.client_accuracy == [] and recorder.targets == []
    assert all(row.get("client_acc_mean", "") == "" for row in recorder.evaluations)
