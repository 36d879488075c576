"""The event loop on an in-process Grid: learning, determinism, invariants.

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_each_strategy_learns_digits[default-80-0.85] | final accuracy | 0,1,2,3,4 | 0.925 | >= 0.85 | 0.075 |
| test_each_strategy_learns_digits[default-80-0.85] | initial accuracy | 0,1,2,3,4 | 0.139 | <= 0.3 | 0.161 |
| test_each_strategy_learns_digits[dynamic-80-0.8] | final accuracy | 0,1,2,3,4 | 0.833 | >= 0.8 | 0.033 |
| test_each_strategy_learns_digits[dynamic-80-0.8] | initial accuracy | 0,1,2,3,4 | 0.139 | <= 0.3 | 0.161 |
| test_each_strategy_learns_digits[fedasync-400-0.85] | final accuracy | 0,1,2,3,4 | 0.883 | >= 0.85 | 0.033 |
| test_each_strategy_learns_digits[fedasync-400-0.85] | initial accuracy | 0,1,2,3,4 | 0.139 | <= 0.3 | 0.161 |
| test_each_strategy_learns_digits[fedavg-30-0.85] | final accuracy | 0,1,2,3,4 | 0.917 | >= 0.85 | 0.067 |
| test_each_strategy_learns_digits[fedavg-30-0.85] | initial accuracy | 0,1,2,3,4 | 0.139 | <= 0.3 | 0.161 |"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from fedstale.results import WALL_COLUMNS
from tests.helpers import config, run

# Wall time differs between runs; the hosting node depends on the node count.
NOT_REPRODUCIBLE = set(WALL_COLUMNS) | {"node"}


def _reproducible(rows):
    return [{k: v for k, v in row.items() if k not in NOT_REPRODUCIBLE} for row in rows]


@pytest.mark.parametrize(
    ("name", "versions", "floor"),
    [("default", 80, 0.85), ("fedasync", 400, 0.85), ("fedavg", 30, 0.85), ("dynamic", 80, 0.80)],
)
@pytest.mark.xdist_group("event-loop-learns")
def test_each_strategy_learns_digits(learned, name, versions, floor):
    """FedBuff, FedAsync, sync FedAvg and dynamic staleness reach the floor."""
    result, _, recorder = run(config(name, stop__num_updates=versions, evaluation__every=10))
    learned.at_least("final accuracy", result.evaluate_metrics_serverapp[versions]["accuracy"], floor)
    learned.at_most("initial accuracy", recorder.evaluations[0]["accuracy"], 0.3)  # it started untrained


def test_same_seed_same_rows_whatever_the_workers():
    """Identical CSV rows (wall columns aside) for any node count and reply order."""
    cfg = config(stop__num_updates=25)
    _, _, a = run(cfg, num_nodes=1, order="fifo", per_pull=1)
    _, _, b = run(cfg, num_nodes=3, order="random", per_pull=4, seed=7)
    assert len(a.updates) == 125
    assert _reproducible(a.updates) == _reproducible(b.updates)
    assert _reproducible(a.evaluations) == _reproducible(b.evaluations)


def test_another_seed_changes_the_run():
    """The seed drives selection, delays and training (not a constant run)."""
    _, _, a = run(config(stop__num_updates=5))
    _, _, b = run(config(stop__num_updates=5, run__seed=1))
    assert _reproducible(a.updates) != _reproducible(b.updates)


def test_async_keeps_concurrency_clients_busy():
    """At every dispatch exactly C tasks are in flight; staleness is in versions."""
    cfg = config(stop__num_updates=20)
    _, _, rec = run(cfg)
    rows = rec.updates
    for row in rows:
        assert row["staleness"] == row["arrival_version"] - row["dispatch_version"]
        assert row["arrival_time"] >= row["dispatch_time"]
    # Count tasks in flight just after each dispatch time.
    for row in rows:
        t = row["dispatch_time"]
        busy = sum(1 for r in rows if r["dispatch_time"] <= t < r["arrival_time"])
        assert busy <= cfg.strategy.concurrency
    late = [r for r in rows if r["dispatch_time"] > 0]
    t = late[len(late) // 2]["dispatch_time"]
    assert sum(1 for r in rows if r["dispatch_time"] <= t < r["arrival_time"]) == 10
    # A client is never dispatched twice at once.
    by_client = defaultdict(list)
    for row in rows:
        by_client[row["client_id"]].append((row["dispatch_time"], row["arrival_time"]))
    for spans in by_client.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_fedbuff_makes_one_version_per_k_updates():
    """With K = 5, version v holds accepted updates 5(v-1)+1 .. 5v."""
    _, strategy, rec = run(config(stop__num_updates=12))
    assert strategy.version == 12
    assert len([r for r in rec.updates if r["accepted"]]) == 60
    # Updates are delivered in virtual-time order.
    times = [r["arrival_time"] for r in rec.updates]
    assert times == sorted(times)


def test_sync_mode_is_a_barrier_of_c_clients():
    """fedavg: each version is one round of C fresh updates dispatched together."""
    cfg = config("fedavg", stop__num_updates=6)
    _, _, rec = run(cfg)
    rounds = defaultdict(list)
    for row in rec.updates:
        rounds[row["arrival_version"]].append(row)
    assert sorted(rounds) == list(range(6))
    previous_end = 0.0
    for version in range(6):
        rows = rounds[version]
        assert len(rows) == cfg.strategy.concurrency
        assert len({r["client_id"] for r in rows}) == cfg.strategy.concurrency
        assert {r["staleness"] for r in rows} == {0}
        assert {r["dispatch_time"] for r in rows} == {previous_end}
        previous_end = max(r["arrival_time"] for r in rows)
    # The round weights are n_i / Σ n.
    for rows in rounds.values():
        total = sum(r["num_examples"] for r in rows)
        for r in rows:
            assert r["weight"] == pytest.approx(r["num_examples"] / total)


def test_fedbuff_sync_mode_matches_fedavg_weighted_by_examples():
    """FedBuff in sync mode with η=1, Σw normalisation and example weights is FedAvg."""
    common = {"stop__num_updates": 4, "strategy__concurrency": 6}
    r_avg, _, _ = run(config("fedavg", **common))
    r_buf, _, _ = run(
        config(
            strategy__mode="sync",
            strategy__normalization="weight_sum",
            strategy__weight_by_examples=True,
            **common,
        )
    )
    for key, arr in r_avg.arrays.items():
        assert r_buf.arrays[key].numpy() == pytest.approx(arr.numpy(), abs=1e-5)


def test_max_staleness_drops_old_updates():
    """max_staleness 0 drops every update that arrives after a newer version."""
    _, strategy, rec = run(config(stop__num_updates=6, strategy__max_staleness=0))
    dropped = [r for r in rec.updates if not r["accepted"]]
    assert dropped, "with C=10 and K=5 some updates must be stale"
    for r in dropped:
        assert r["staleness"] > 0
        assert r["reason"] == "staleness > 0"
    assert all(r["staleness"] == 0 for r in rec.updates if r["accepted"])
    assert rec.evaluations[-1]["dropped"] == len(dropped)
    assert rec.evaluations[-1]["updates"] == len(rec.updates)


def test_delay_aware_learning_rate():
    """lr = γ0 / (1 + α_lr · τ_last), τ_last the client's previous staleness."""
    cfg = config(stop__num_updates=15, client__lr_delay_alpha=0.5)
    _, _, rec = run(cfg)
    last = {}
    # Rows are written in delivery order; a client's next task is dispatched
    # after its previous reply was delivered.
    for row in rec.updates:
        tau = last.get(row["client_id"], 0)
        assert row["lr"] == pytest.approx(cfg.client.lr / (1 + 0.5 * tau))
        last[row["client_id"]] = row["staleness"]
    assert any(r["lr"] < cfg.client.lr for r in rec.updates)


def test_virtual_duration_follows_the_delay_model_and_early_stopping():
    """duration = speed·n·epochs_run + 2·latency + 2·bytes/bandwidth (no jitter)."""
    cfg = config(
        stop__num_updates=4,
        client__local_epochs=30,
        client__patience=1,
        client__lr=0.5,
        delay__speed__distribution="constant",
        delay__speed__value=0.001,
        delay__jitter=0.0,
        delay__latency=0.02,
        delay__bandwidth=1e6,
    )
    _, strategy, rec = run(cfg)
    nbytes = strategy.codec.nbytes
    for row in rec.updates:
        expected = 0.001 * row["num_examples"] * row["epochs"] + 0.04 + 2 * nbytes / 1e6
        assert row["virtual_duration"] == pytest.approx(expected)
    assert min(r["epochs"] for r in rec.updates) < 30, "early stopping never triggered"
    assert all(r["epochs"] >= 2 for r in rec.updates)


def test_stop_on_target_accuracy_and_virtual_time():
    """The loop stops at the first evaluation ≥ target, or at the time budget."""
    _, strategy, rec = run(config(stop__num_updates=500, stop__target_accuracy=0.5))
    accuracies = [r["accuracy"] for r in rec.evaluations]
    assert accuracies[-1] >= 0.5 and all(a < 0.5 for a in accuracies[:-1])
    assert strategy.version < 500
    _, strategy, rec = run(config(stop__num_updates=500, stop__max_virtual_time=3.0))
    assert strategy.clock.now == pytest.approx(3.0)
    assert max(r["arrival_time"] for r in rec.updates) <= 3.0
    assert rec.evaluations[-1]["virtual_time"] == pytest.approx(3.0)


def test_federated_evaluation_fills_its_columns():
    """evaluation.federated_clients asks clients to evaluate at each evaluation."""
    result, _, rec = run(config(stop__num_updates=10, evaluation__federated_clients=4))
    assert all(0 <= r["fed_accuracy"] <= 1 for r in rec.evaluations)
    assert sorted(result.evaluate_metrics_clientapp) == [0, 5, 10]
    assert all(math.isfinite(r["fed_loss"]) for r in rec.evaluations)


def test_wall_clock_merges_in_arrival_order():
    """delay.clock: wall (deployment): time is wall time, order is arrival order."""
    cfg = config(
        stop__num_updates=10,
        delay__clock="wall",
        delay__speed__distribution="constant",
        delay__speed__value=10.0,  # 10 s per example if the delay model were used
    )
    _, strategy, rec = run(cfg, order="random")
    assert strategy.clock.name == "wall"
    assert strategy.version == 10
    times = [r["arrival_time"] for r in rec.updates]
    assert times == sorted(times)
    # Durations are wall durations of real work, not the delay model's
    # (which would be >= 10 s/example x 10 examples).
    assert all(0 <= r["virtual_duration"] < 5 for r in rec.updates)
    assert rec.evaluations[-1]["virtual_time"] <= strategy.clock.wall_elapsed()
