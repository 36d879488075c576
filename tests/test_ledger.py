"""Bookkeeping: totals, bytes, ε, and the clients.csv / metrics.csv rows."""

from __future__ import annotations

import pytest
import torch

from fedstale.aggregation.trust import TrustTracker
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS
from fedstale.simulation.adversary import Adversary
from fedstale.strategies.ledger import TOTALS, Ledger, train_metrics
from fedstale.strategies.task import ClientUpdate, Task


def _task(task_id=0, client_id=2, **fields) -> Task:
    base = dict(
        task_id=task_id, client_id=client_id, node_id=77, index=1, dispatch_version=3, dispatch_time=1.5,
        num_examples=40, epochs=1.0, min_epochs=1.0, bytes_down=1000, lr=0.05, seed=9,
    )
    return Task(**{**base, **fields})


def _update(task: Task, staleness: int, accepted: bool = True) -> ClientUpdate:
    update = ClientUpdate(task=task, params=torch.ones(2), base=torch.zeros(2), staleness=staleness, num_examples=40)
    if not accepted:
        update.reject("quarantined")
    return update


def test_delivered_tasks_add_their_bytes_and_the_largest_epsilon():
    ledger = Ledger()
    ledger.count_delivered(_task(bytes_up=200, metrics={"dp-epsilon": 1.5}), dense_nbytes=1000)
    ledger.count_delivered(_task(bytes_up=0), dense_nbytes=1000)  # failed: nothing came back
    ledger.count_delivered(_task(bytes_up=300, metrics={"dp-epsilon": 0.5}), dense_nbytes=1000)
    assert (ledger.updates, ledger.bytes_down, ledger.bytes_up, ledger.dense_bytes_up) == (3, 3000, 500, 2000)
    assert ledger.max_client_epsilon == 1.5


def test_merged_updates_count_as_accepted_or_rejected():
    ledger = Ledger()
    ledger.count_merged(_update(_task(), staleness=2))
    ledger.count_merged(_update(_task(), staleness=4))
    ledger.count_merged(_update(_task(), staleness=1, accepted=False))
    assert (ledger.accepted, ledger.rejected, ledger.since_eval) == (2, 1, [2, 4])


def test_client_row():
    task = _task(bytes_up=250, finish_time=4.0, metrics={"num-examples": 38, "epochs-run": 1.0, "train-loss": 0.7})
    update = _update(task, staleness=2)
    update.weight = 0.25
    row = Ledger().client_row(task, update, version=5, now=9.0, node=1, accepted=True, reason="")
    assert set(row) == set(CLIENT_COLUMNS)
    assert row | {"wall_duration": 0.0} == {
        "task_id": 0, "client_id": 2, "node": 1, "dispatch_version": 3, "arrival_version": 5, "staleness": 2,
        "weight": 0.25, "dispatch_time": 1.5, "arrival_time": 4.0, "virtual_duration": 2.5,
        "wall_duration": 0.0, "fit_seconds": "", "num_examples": 38, "epochs": 1.0, "lr": 0.05,
        "train_loss": 0.7, "accepted": True, "reason": "", "trust": "", "quarantined": "", "malicious": "",
        "epsilon": "", "bytes_up": 250, "bytes_down": 1000,
    }


def test_client_row_of_a_failed_task_with_trust_and_an_adversary():
    """No finish time yet: it arrives now; no reply metrics: the size known at start."""
    trust = TrustTracker(smoothing=0.0, quarantine_below=0.5, recover_above=0.6)
    trust.observe(2, 0.1)
    ledger = Ledger(trust, Adversary("sign_flip", {2}, {}))
    row = ledger.client_row(_task(lr=None), None, version=3, now=6.0, node=-1, accepted=False, reason="boom")
    assert (row["arrival_time"], row["virtual_duration"], row["num_examples"], row["lr"], row["weight"]) == (
        6.0, 4.5, 40, "", "",
    )
    assert (row["trust"], row["quarantined"], row["malicious"], row["reason"]) == (0.1, True, True, "boom")


def test_metrics_row_starts_a_new_staleness_window():
    ledger = Ledger()
    ledger.count_delivered(_task(bytes_up=250), dense_nbytes=1000)
    ledger.count_merged(_update(_task(), staleness=1))
    ledger.count_merged(_update(_task(), staleness=2))
    ledger.failures = 1
    row = ledger.metrics_row(version=4, now=12.5, wall=0.3, central_epsilon=0.8)
    assert set(row) == set(METRICS_COLUMNS)
    assert row == {
        "version": 4, "virtual_time": 12.5, "wall_time": 0.3, "updates": 1, "accepted": 2, "dropped": 0,
        "rejected": 0, "failures": 1, "quarantined": "", "mean_staleness": 1.5, "accuracy": "", "loss": "",
        "fed_accuracy": "", "fed_loss": "", "attack_success": "", "max_client_epsilon": "",
        "central_epsilon": 0.8, "bytes_up": 250, "bytes_down": 1000, "compression_ratio": 4.0,
        "client_acc_mean": "", "client_acc_std": "", "client_acc_worst10": "", "client_acc_jain": "",
    }
    again = ledger.metrics_row(version=4, now=12.5, wall=0.4, central_epsilon=None)
    assert (again["mean_staleness"], again["central_epsilon"]) == ("", "")
    assert Ledger().metrics_row(version=0, now=0.0, wall=0.0, central_epsilon=None)["compression_ratio"] == ""


def test_totals_round_trip():
    ledger = Ledger()
    ledger.count_delivered(_task(bytes_up=5, metrics={"dp-epsilon": 2.0}), dense_nbytes=10)
    ledger.count_merged(_update(_task(), staleness=3))
    totals = ledger.totals()
    assert list(totals) == list(TOTALS)
    totals["since_eval"].append(99)
    assert ledger.since_eval == [3]
    other = Ledger()
    other.load_totals(ledger.totals())
    assert other.totals() == ledger.totals()


def test_train_metrics():
    tasks = [_task(metrics={"train-loss": 0.5}), _task(metrics={"train-loss": 1.5}), _task()]
    record = train_metrics([_update(t, s) for t, s in zip(tasks, (0, 1, 5))])
    assert dict(record) == {"num-updates": 3, "mean-staleness": 2.0, "train-loss": 1.0}
    assert "train-loss" not in train_metrics([_update(_task(), 0)])
    assert train_metrics([_update(_task(), 4)])["mean-staleness"] == pytest.approx(4.0)
