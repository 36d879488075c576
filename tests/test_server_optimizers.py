"""Server optimizers: hand-computed steps, and agreement with Flower's FedAdam/FedYogi/FedAdagrad."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedYogi

from fedstale.aggregation.optimizers import (
    SERVER_OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    Yogi,
    make_server_optimizer,
)
from fedstale.aggregation.staleness import Constant, Polynomial
from fedstale.component_state import capture, restore
from fedstale.simulation.local_grid import _ensure_task_identity
from fedstale.strategies import ClientUpdate, FedAsync, FedAvg, FedBuff, Task


def _vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _close(tensor: torch.Tensor, expected: list[float], tol: float = 1e-6) -> None:
    assert tensor.tolist() == pytest.approx(expected, abs=tol)


# --------------------------------------------------------------------------
# Hand-computed steps on small vectors
# --------------------------------------------------------------------------


def test_adam_two_steps_by_hand():
    """η = 0.1, β1 = 0.5, β2 = 0.75, τ = 0.5, d = [1, −2] then [3, 0].

    Step 1: m = [0.5, −1], v = [0.25, 1], c = √(1 − 0.75²)/(1 − 0.5²) = √0.4375/0.75,
    x = 0.1·c·m/(√v + τ) = 0.1·c·[0.5/1, −1/1.5].
    Step 2: m = [1.75, −0.5], v = [2.4375, 0.75], c = √(1 − 0.75³)/(1 − 0.5³).
    """
    adam = Adam(lr=0.1, beta_1=0.5, beta_2=0.75, tau=0.5)
    x = adam.step(torch.zeros(2), _vec(1.0, -2.0))
    c1 = math.sqrt(0.4375) / 0.75
    first = [0.1 * c1 * 0.5 / 1.0, 0.1 * c1 * -1.0 / 1.5]
    _close(x, first)
    x = adam.step(x, _vec(3.0, 0.0))
    c2 = math.sqrt(1 - 0.75**3) / (1 - 0.5**3)
    second = [
        first[0] + 0.1 * c2 * 1.75 / (math.sqrt(2.4375) + 0.5),
        first[1] + 0.1 * c2 * -0.5 / (math.sqrt(0.75) + 0.5),
    ]
    _close(x, second)
    assert adam.steps == 2
    _close(adam.m, [1.75, -0.5])
    _close(adam.v, [2.4375, 0.75])


def test_yogi_two_steps_by_hand():
    """η = 1, β1 = 0, β2 = 0.5, τ = 1: v ← v − 0.5·d²·sign(v − d²).

    d = [2, 1]: v = 0 − 0.5·[4, 1]·(−1) = [2, 0.5]; x = [2/(√2 + 1), 1/(√0.5 + 1)].
    d = [1, 1]: v − 0.5·[1, 1]·sign([1, −0.5]) = [1.5, 1]; x += [1/(√1.5 + 1), 1/2].
    """
    yogi = Yogi(lr=1.0, beta_1=0.0, beta_2=0.5, tau=1.0)
    x = yogi.step(torch.zeros(2), _vec(2.0, 1.0))
    first = [2 / (math.sqrt(2) + 1), 1 / (math.sqrt(0.5) + 1)]
    _close(x, first)
    x = yogi.step(x, _vec(1.0, 1.0))
    _close(yogi.v, [1.5, 1.0])
    _close(x, [first[0] + 1 / (math.sqrt(1.5) + 1), first[1] + 0.5])


def test_adagrad_two_steps_by_hand():
    """η = 0.5, β1 = 0, τ = 1: v ← v + d²; d = [3, −4] then [4, 0]: v = [9, 16], [25, 16]."""
    adagrad = Adagrad(lr=0.5, beta_1=0.0, beta_2=0.99, tau=1.0)
    x = adagrad.step(_vec(1.0, 1.0), _vec(3.0, -4.0))
    _close(x, [1 + 0.5 * 3 / 4, 1 - 0.5 * 4 / 5])
    x = adagrad.step(x, _vec(4.0, 0.0))
    _close(x, [1 + 0.5 * 3 / 4 + 0.5 * 4 / 6, 1 - 0.5 * 4 / 5])


def test_sgd_momentum_and_the_rate():
    """m ← 0.5·m + d, x ← x + r·η·m with η = 2, r = 0.25."""
    sgd = SGD(lr=2.0, momentum=0.5)
    x = sgd.step(torch.zeros(1), _vec(4.0), rate=0.25)  # m = 4 → x = 2
    _close(x, [2.0])
    x = sgd.step(x, _vec(2.0), rate=0.25)  # m = 2 + 2 = 4 → x = 4
    _close(x, [4.0])


def test_adaptive_rate_scales_the_step_not_the_moments():
    """FedAsync's α_t multiplies the step only: m, v are those of rate 1."""
    a, b = Adam(lr=0.1), Adam(lr=0.1)
    full = a.step(torch.zeros(3), _vec(1.0, -1.0, 0.5))
    quarter = b.step(torch.zeros(3), _vec(1.0, -1.0, 0.5), rate=0.25)
    _close(quarter, (0.25 * full).tolist())
    assert torch.equal(a.m, b.m) and torch.equal(a.v, b.v)


def test_registry_and_bad_parameters():
    assert list(SERVER_OPTIMIZERS) == ["sgd", "adam", "yogi", "adagrad"]
    assert isinstance(make_server_optimizer("yogi", lr=0.01), Yogi)
    with pytest.raises(ValueError, match="unknown server optimizer 'adamw'"):
        make_server_optimizer("adamw")
    with pytest.raises(ValueError, match="beta_2 must be in"):
        Adam(beta_2=1.0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        Yogi(tau=0.0)


def test_state_is_captured_and_restored():
    """A resume point holds m, v and t: a restored copy steps as the original."""
    original = Adam(lr=0.1)
    x = original.step(torch.zeros(2), _vec(1.0, 2.0))
    saved = capture(original)
    copy = Adam(lr=0.1)
    restore(copy, saved)
    assert torch.equal(original.step(x, _vec(-1.0, 0.5)), copy.step(x, _vec(-1.0, 0.5)))
    original.reset()
    assert (original.m, original.v, original.steps) == (None, None, 0)


# --------------------------------------------------------------------------
# The strategies with a server optimizer
# --------------------------------------------------------------------------


def _update(params, base, staleness=0, num_examples=10):
    task = Task(
        task_id=0, client_id=0, node_id=0, index=0, dispatch_version=0, dispatch_time=0.0,
        num_examples=num_examples, epochs=1, min_epochs=1, bytes_down=0, lr=0.1, seed=0,
    )
    return ClientUpdate(
        task=task, params=torch.tensor(params, dtype=torch.float32),
        base=torch.tensor(base, dtype=torch.float32), staleness=staleness,
        num_examples=num_examples,
    )


def test_fedbuff_hands_its_buffered_mean_to_the_optimizer():
    """K = 2, count normalisation, s = 1/√(1+τ): d = [0.5, 0.5] (as the paper), then Adagrad."""
    strategy = FedBuff(
        buffer_size=2, staleness=Polynomial(0.5),
        server_optimizer=Adagrad(lr=0.5, beta_1=0.0, tau=1.0),
    )
    model = _vec(1.0, 1.0)
    assert strategy.aggregate_updates(model, [_update([2.0, 1.0], [1.0, 1.0], 0)]) is None
    out = strategy.aggregate_updates(model, [_update([0.0, 4.0], [0.0, 2.0], 3)])
    _close(out, [1 + 0.5 * 0.5 / 1.5, 1 + 0.5 * 0.5 / 1.5])  # v = 0.25, √v + τ = 1.5


def test_fedasync_steps_with_its_staleness_scaled_rate():
    """α = 0.5, τ = 3, s = 1/2: α_t = 0.25; Adagrad (η = 1, τ = 1) on d = x_new − x = [3, −4]."""
    strategy = FedAsync(
        alpha=0.5, staleness=Polynomial(0.5),
        server_optimizer=Adagrad(lr=1.0, beta_1=0.0, tau=1.0),
    )
    update = _update([4.0, -3.0], [9.0, 9.0], staleness=3)
    out = strategy.aggregate_updates(_vec(1.0, 1.0), [update])
    _close(out, [1 + 0.25 * 3 / 4, 1 - 0.25 * 4 / 5])
    assert update.weight == pytest.approx(0.25)


def test_fedasync_default_is_the_mixing_rule_bit_for_bit():
    """SGD with η = 1 and no momentum is torch.lerp(x, x_new, α_t), as before."""
    strategy = FedAsync(alpha=0.6, staleness=Constant())
    model = torch.randn(50, generator=torch.Generator().manual_seed(1))
    target = torch.randn(50, generator=torch.Generator().manual_seed(2))
    out = strategy.aggregate_updates(model, [_update(target.tolist(), [0.0] * 50)])
    assert torch.equal(out, torch.lerp(model, target, 0.6))


# --------------------------------------------------------------------------
# Agreement with Flower's FedAdam / FedYogi / FedAdagrad (sync rounds)
# --------------------------------------------------------------------------

FLOWER = {
    "adam": (FedAdam, {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    "yogi": (FedYogi, {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    "adagrad": (FedAdagrad, {"eta": 0.1, "tau": 1e-3}),
}
"""Flower's strategy and its parameters (its defaults) for each optimizer."""


def _rounds(seed: int = 0, num_rounds: int = 4, clients: int = 3):
    """Per round, each client's model (two arrays) and example count, drawn around a drifting x."""
    rng = np.random.default_rng(seed)
    return [
        [
            (
                {
                    "w": rng.normal(size=(2, 3)).astype(np.float32),
                    "b": rng.normal(size=4).astype(np.float32),
                },
                int(rng.integers(5, 50)),
            )
            for _ in range(clients)
        ]
        for _ in range(num_rounds)
    ]


def _reply(arrays: dict[str, np.ndarray], num_examples: int) -> Message:
    instruction = Message(
        content=RecordDict({"arrays": ArrayRecord({}), "config": ConfigRecord({})}),
        dst_node_id=1,
        message_type="train",
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": num_examples}),
        }
    )
    return Message(content, reply_to=instruction)


@pytest.mark.parametrize("name", list(FLOWER))
@pytest.mark.parametrize("rule", ["fedavg", "fedbuff"])
def test_sync_rounds_agree_with_flower(name, rule):
    """Four rounds of three clients: fedstale's model equals Flower's to 1e-6 after each.

    Flower's strategy gets the replies as Messages (``aggregate_train``);
    fedstale's FedAvg (and FedBuff in sync mode with weight_sum, examples
    weights and s = 1, which is FedAvg) gets the same client models as
    updates from the same current model.
    """
    _ensure_task_identity()
    flower_cls, params = FLOWER[name]
    flower = flower_cls(**params)
    ours = make_server_optimizer(
        name, lr=params["eta"], beta_1=params.get("beta_1", 0.0),
        beta_2=params.get("beta_2", 0.0), tau=params["tau"],
    )
    if rule == "fedavg":
        strategy = FedAvg(server_optimizer=ours)
    else:
        strategy = FedBuff(
            mode="sync", normalization="weight_sum", weight_by_examples=True,
            staleness=Constant(), server_optimizer=ours,
        )
    current = {"w": np.zeros((2, 3), np.float32), "b": np.full(4, 0.5, np.float32)}
    flat = torch.from_numpy(np.concatenate([current["w"].ravel(), current["b"]]))
    for server_round, clients in enumerate(_rounds(), start=1):
        flower.current_arrays = current
        arrays, _ = flower.aggregate_train(server_round, [_reply(a, n) for a, n in clients])
        current = {k: arrays[k].numpy() for k in ("w", "b")}
        updates = [
            _update(np.concatenate([a["w"].ravel(), a["b"]]).tolist(), flat.tolist(), 0, n)
            for a, n in clients
        ]
        flat = strategy.aggregate_updates(flat, updates)
        expected = np.concatenate([current["w"].ravel(), current["b"]])
        np.testing.assert_allclose(flat.numpy(), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# From the configuration
# --------------------------------------------------------------------------


def test_config_builds_the_optimizer_and_rejects_unknown_names():
    """strategy.server_optimizer + server_lr + strategy.adaptive.* reach every strategy."""
    from fedstale.builders import build_strategy
    from fedstale.config import ConfigError
    from tests.helpers import config

    for name in ("fedbuff", "fedavg", "fedasync"):
        strategy = build_strategy(config(**{
            "strategy.name": name, "strategy.server_optimizer": "yogi", "strategy.server_lr": 0.02,
            "strategy.adaptive.beta_1": 0.5, "strategy.adaptive.beta_2": 0.7,
            "strategy.adaptive.tau": 0.01,
        }))
        opt = strategy.server_optimizer
        assert isinstance(opt, Yogi)
        assert (opt.lr, opt.beta_1, opt.beta_2, opt.tau) == (0.02, 0.5, 0.7, 0.01)
    default = build_strategy(config()).server_optimizer
    assert isinstance(default, SGD) and (default.lr, default.momentum) == (1.0, 0.0)
    with pytest.raises(ConfigError, match=r"strategy.server_optimizer: 'adamm' is not one of "
                       r"sgd, adam, yogi, adagrad \(did you mean 'adam'\?\)"):
        config(**{"strategy.server_optimizer": "adamm"})
    with pytest.raises(ConfigError, match="strategy.adaptive.tau: must be > 0"):
        config(**{"strategy.adaptive.tau": 0})
