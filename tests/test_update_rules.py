"""Each strategy's update rule on hand-computed vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedstale.aggregation.staleness import Constant, Hinge, Polynomial
from fedstale.strategies import ClientUpdate, DynamicStaleness, FedAsync, FedAvg, FedBuff, Task


def _update(params, base, staleness, num_examples=10):
    task = Task(
        task_id=0, client_id=0, node_id=0, index=0, dispatch_version=0, dispatch_time=0.0,
        num_examples=num_examples, epochs=1, min_epochs=1, bytes_down=0, lr=0.1, seed=0,
    )
    return ClientUpdate(
        task=task,
        params=torch.tensor(params, dtype=torch.float32),
        base=torch.tensor(base, dtype=torch.float32),
        staleness=staleness,
        num_examples=num_examples,
    )


def _close(tensor, expected):
    assert tensor.tolist() == pytest.approx(expected, abs=1e-6)


def test_fedasync_mixes_with_staleness_discounted_alpha():
    """x ← (1 − α s(τ)) x + α s(τ) x_new; α = 0.5, s = (τ+1)^-0.5, τ = 3 → α_t = 0.25."""
    strategy = FedAsync(alpha=0.5, staleness=Polynomial(0.5))
    model = torch.tensor([0.0, 4.0])
    update = _update([1.0, 0.0], [9.0, 9.0], staleness=3)
    _close(strategy.aggregate_updates(model, [update]), [0.25, 3.0])
    assert update.weight == pytest.approx(0.25)


def test_fedasync_applies_several_updates_in_order():
    """Two updates: the second mixes into the result of the first (hinge a=10, b=4)."""
    strategy = FedAsync(alpha=0.8, staleness=Hinge(10, 4))
    first = _update([10.0], [0.0], staleness=2)  # s = 1  → α_t = 0.8
    second = _update([0.0], [0.0], staleness=5)  # s = 1/11 → α_t = 0.8/11
    out = strategy.aggregate_updates(torch.tensor([0.0]), [first, second])
    _close(out, [8.0 * (1 - 0.8 / 11)])


def test_fedbuff_count_normalisation_is_the_papers_rule():
    """x ← x + η (1/K) Σ s(τ_i) Δ_i with s = 1/√(1+τ)."""
    strategy = FedBuff(buffer_size=2, server_lr=1.0, staleness=Polynomial(0.5))
    model = torch.tensor([1.0, 1.0])
    a = _update([2.0, 1.0], [1.0, 1.0], staleness=0)  # Δ = [1, 0], s = 1
    b = _update([0.0, 4.0], [0.0, 2.0], staleness=3)  # Δ = [0, 2], s = 0.5
    assert strategy.aggregate_updates(model, [a]) is None  # buffer not full
    out = strategy.aggregate_updates(model, [b])
    _close(out, [1.0 + 0.5, 1.0 + 0.5])  # (1·[1,0] + 0.5·[0,2]) / 2
    assert (a.weight, b.weight) == (1.0, 0.5)


def test_fedbuff_weight_sum_normalisation_and_server_lr():
    """weight_sum: Σ s Δ / Σ s, then × η_g = 2."""
    strategy = FedBuff(buffer_size=2, server_lr=2.0, normalization="weight_sum")
    a = _update([1.0, 0.0], [0.0, 0.0], staleness=0)
    b = _update([0.0, 2.0], [0.0, 0.0], staleness=3)
    out = strategy.aggregate_updates(torch.zeros(2), [a, b])
    _close(out, [2.0 * 1.0 / 1.5, 2.0 * 1.0 / 1.5])


def test_fedbuff_server_momentum():
    """m ← β m + d; x ← x + η m over two buffer flushes (β = 0.5)."""
    strategy = FedBuff(buffer_size=1, server_momentum=0.5, staleness=Constant())
    x = strategy.aggregate_updates(torch.zeros(1), [_update([1.0], [0.0], 0)])  # m = 1
    _close(x, [1.0])
    x = strategy.aggregate_updates(x, [_update([3.0], [1.0], 0)])  # d = 2, m = 0.5 + 2
    _close(x, [3.5])


def test_fedbuff_weight_by_examples():
    """w_i = s(τ_i) · n_i / mean(n): n = 10 and 30 → w = 0.5 and 1.5."""
    strategy = FedBuff(buffer_size=2, staleness=Constant(), weight_by_examples=True)
    a = _update([4.0], [0.0], 0, num_examples=10)
    b = _update([0.0], [0.0], 0, num_examples=30)
    _close(strategy.aggregate_updates(torch.zeros(1), [a, b]), [(0.5 * 4.0) / 2])


def test_fedavg_matches_flowers_aggregate_arrayrecords():
    """Example-weighted mean, equal to Flower's own FedAvg aggregation."""
    rng = np.random.default_rng(0)
    models = [rng.normal(size=5).astype(np.float32) for _ in range(3)]
    sizes = [10, 20, 70]
    updates = [_update(m.tolist(), [0.0] * 5, 0, n) for m, n in zip(models, sizes)]
    ours = FedAvg().aggregate_updates(torch.zeros(5), updates)
    contents = [
        RecordDict({"a": ArrayRecord([m]), "m": MetricRecord({"num-examples": n})})
        for m, n in zip(models, sizes)
    ]
    reference = aggregate_arrayrecords(contents, "num-examples")
    _close(ours, next(iter(reference.values())).numpy().tolist())
    assert [u.weight for u in updates] == pytest.approx([0.1, 0.2, 0.7])


def test_dynamic_staleness_weights():
    """w = b/(b+τ) · ((1+cos)/2)^γ with b = max(b_min, EMA(τ))."""
    strategy = DynamicStaleness(buffer_size=2, ema=0.9, b_min=1.0, similarity_exponent=1.0)
    # First update: τ̄ = 2 → b = 2, s = 2/4; no server step yet → no agreement factor.
    first = _update([1.0, 0.0], [0.0, 0.0], staleness=2)
    assert strategy.staleness_weight(first) == pytest.approx(0.5)
    # Second: τ̄ = 0.9·2 + 0.1·0 = 1.8 → b = 1.8, s = 1.
    second = _update([0.0, 1.0], [0.0, 0.0], staleness=0)
    assert strategy.staleness_weight(second) == pytest.approx(1.0)
    assert strategy.mean_staleness == pytest.approx(1.8)
    # A server step along +x, then an update orthogonal to it (cos = 0) with
    # τ = 0: weight = 1 · (1 + 0)/2; an opposite one (cos = −1): 0.
    strategy._last_step = torch.tensor([1.0, 0.0])
    orthogonal = _update([0.0, 3.0], [0.0, 0.0], staleness=0)
    assert strategy.staleness_weight(orthogonal) == pytest.approx(0.5)
    opposite = _update([-1.0, 0.0], [0.0, 0.0], staleness=0)
    assert strategy.staleness_weight(opposite) == pytest.approx(0.0)
    # Unusually stale: τ = 20 lifts τ̄ to 0.9³·1.8 + 0.1·20 ≈ 3.31 = b; s = b/(b + 20).
    stale = _update([1.0, 0.0], [0.0, 0.0], staleness=20)
    tau_bar = 0.9 * (0.9 * (0.9 * 1.8)) + 0.1 * 20
    expected = max(1.0, tau_bar) / (max(1.0, tau_bar) + 20)
    assert strategy.staleness_weight(stale) == pytest.approx(expected)


def test_dynamic_step_uses_fedbuff_rule_and_remembers_direction():
    """The dynamic weights enter FedBuff's step; the step becomes g."""
    strategy = DynamicStaleness(buffer_size=2, similarity_exponent=0.0)
    a = _update([2.0], [0.0], staleness=0)
    b = _update([4.0], [0.0], staleness=0)
    out = strategy.aggregate_updates(torch.ones(1), [a, b])
    # τ̄ = 0 → b = b_min = 1; s(0) = 1 for both; count normalisation: (2 + 4)/2.
    _close(out, [1.0 + 3.0])
    _close(strategy._last_step, [3.0])


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"alpha": 1.5}])
def test_fedasync_rejects_alpha_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="alpha must be in"):
        FedAsync(**bad)


def test_strategies_refuse_modes_they_do_not_have():
    with pytest.raises(ValueError, match="FedAsync supports mode async"):
        FedAsync(mode="sync")
    with pytest.raises(ValueError, match="FedAvg supports mode sync"):
        FedAvg(mode="async")
    assert FedBuff(mode="sync").mode == "sync"
