"""Central (server-side) DP: clipping, calibrated noise, accounting, refusals, runs.

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_central_dp_run_reports_a_growing_epsilon | final accuracy | 0,1,2,3,4 | 0.681 | >= 0.5 | 0.181 |"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.client import NumPyClient

from fedstale.aggregation.privacy import CentralGaussianMechanism, clip_rows
from fedstale.client import build_client_app
from fedstale.client.clipping import central_clipping_mod
from fedstale.config import ConfigError
from fedstale.results import read_csv
from fedstale.server_app import run_experiment
from fedstale.simulation.local_grid import LocalGrid, _ensure_task_identity
from fedstale.strategies import FedAsync, FedBuff
from fedstale.strategies.task import ClientUpdate, Task
from tests.helpers import CONFIGS, config, run


def _mechanism(z: float = 1.0, c: float = 2.0, n: int = 20, sampling: str = "none", seed: int = 0):
    return CentralGaussianMechanism(z, c, population_size=n, delta=1e-5, sampling=sampling, seed=seed)


def _update(delta: torch.Tensor, staleness: int = 0, client: int = 0) -> ClientUpdate:
    task = Task(
        task_id=client, client_id=client, node_id=0, index=0, dispatch_version=0,
        dispatch_time=0.0, num_examples=10, epochs=1, min_epochs=1, bytes_down=0,
        lr=None, seed=0,
    )
    base = torch.zeros_like(delta)
    return ClientUpdate(task=task, params=base + delta, base=base, staleness=staleness, num_examples=10)


def test_clip_rows_scales_long_rows_to_the_norm_and_keeps_short_ones():
    deltas = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped = clip_rows(deltas, 1.0)
    assert torch.allclose(clipped[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(clipped[1], deltas[1])
    assert torch.equal(clipped[2], deltas[2])


def test_noise_std_is_z_c_over_k():
    """σ = z·C/K: z=1, C=2, K=5 → 0.4; the sample std of 400k draws is within 1%."""
    mechanism = _mechanism(z=1.0, c=2.0)
    noisy = mechanism.release(torch.zeros(400_000, dtype=torch.float64), count=5)
    assert mechanism.std(5) == pytest.approx(0.4)
    assert float(noisy.std()) == pytest.approx(0.4, rel=0.01)
    assert abs(float(noisy.mean())) < 4 * 0.4 / math.sqrt(400_000)


def test_noise_is_reproducible_for_a_seed_and_restarts_with_reset():
    a, b = _mechanism(seed=3), _mechanism(seed=3)
    first = a.release(torch.zeros(10), 2)
    assert torch.equal(first, b.release(torch.zeros(10), 2))
    assert not torch.equal(first, _mechanism(seed=4).release(torch.zeros(10), 2))
    a.reset()
    assert a.num_releases == 0 and a.epsilon() is None
    assert torch.equal(a.release(torch.zeros(10), 2), first)


def _dp_accounting_epsilon(z: float, releases: int, q: float | None, delta: float = 1e-5) -> float:
    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
    if q is not None:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, releases))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(("sampling", "q"), [("none", None), ("poisson", 5 / 20)])
def test_epsilon_grows_and_matches_dp_accounting(sampling, q):
    mechanism = _mechanism(z=1.1, n=20, sampling=sampling)
    epsilons = []
    for _ in range(30):
        mechanism.release(torch.zeros(4), count=5)
        epsilons.append(mechanism.epsilon())
    assert all(b > a for a, b in zip(epsilons, epsilons[1:]))
    assert epsilons[-1] == pytest.approx(_dp_accounting_epsilon(1.1, 30, q), rel=1e-9)


def test_epsilon_without_sampling_respects_the_closed_form_rdp_bound():
    """Gaussian mechanism: RDP_α = α/(2z²) per release, ε ≤ min_α T·α/(2z²) + log(1/δ)/(α−1)."""
    mechanism = _mechanism(z=2.0)
    for _ in range(10):
        mechanism.release(torch.zeros(1), 5)
    bound = min(10 * a / (2 * 4.0) + math.log(1e5) / (a - 1) for a in np.linspace(1.01, 200, 20000))
    assert mechanism.epsilon() <= bound
    assert mechanism.epsilon() > 0.8 * bound  # the improved conversion gains little


def test_poisson_accounting_gives_a_smaller_epsilon():
    none, poisson = _mechanism(sampling="none"), _mechanism(sampling="poisson")
    for _ in range(20):
        none.release(torch.zeros(1), 5)
        poisson.release(torch.zeros(1), 5)
    assert poisson.epsilon() < 0.5 * none.epsilon()


def test_fedbuff_step_clips_then_adds_noise_of_the_calibrated_scale():
    """Two updates of norm 10 and 0.5 (C=1), K=2, τ=0: d = (clip(Δ1)+clip(Δ2))/2 + N(0, (z·C/2)²)."""
    d = 200_000
    direction = torch.zeros(d)
    direction[0] = 1.0
    updates = [_update(direction * 10.0, client=0), _update(direction * 0.5, client=1)]
    quiet = FedBuff(buffer_size=2, central_dp=_mechanism(z=1e-6, c=1.0), num_clients=20)
    step = quiet.server_step(torch.zeros(d), updates)
    assert float(step[0]) == pytest.approx((1.0 + 0.5) / 2, abs=1e-5)
    noisy = FedBuff(buffer_size=2, central_dp=_mechanism(z=1.0, c=1.0), num_clients=20)
    zero = [_update(torch.zeros(d), client=0), _update(torch.zeros(d), client=1)]
    step = noisy.server_step(torch.zeros(d), zero)
    assert float(step.std()) == pytest.approx(0.5, rel=0.01)
    assert noisy.central_epsilon() == pytest.approx(_dp_accounting_epsilon(1.0, 1, None))


def test_fedasync_privatizes_each_update_before_mixing():
    """x_new ← x_start + clip_C(Δ) + N(0, (z·C)²); mixed with α_t = α (τ = 0)."""
    strategy = FedAsync(alpha=0.5, central_dp=_mechanism(z=1e-6, c=1.0), num_clients=20)
    delta = torch.zeros(8)
    delta[:2] = torch.tensor([3.0, 4.0])  # norm 5 → clipped to [0.6, 0.8]
    model = strategy.aggregate_updates(torch.zeros(8), [_update(delta)])
    assert model is not None
    assert torch.allclose(model[:2], torch.tensor([0.3, 0.4]), atol=1e-5)
    assert strategy.central_dp is not None and strategy.central_dp.num_releases == 1


class _Doubler(NumPyClient):
    def __init__(self, context):
        del context

    def fit(self, parameters, config):
        return [p * 2.0 + 3.0 for p in parameters], 10, {}


def _send_through_app(config: dict) -> tuple[np.ndarray, np.ndarray]:
    _ensure_task_identity()
    grid = LocalGrid(build_client_app(_Doubler, train_mods=[central_clipping_mod]), num_nodes=1)
    sent = np.arange(6, dtype=np.float32)
    message = Message(
        RecordDict({"arrays": ArrayRecord({"w": Array(sent.copy())}), "config": ConfigRecord(config)}),
        dst_node_id=next(iter(grid.get_node_ids())),
        message_type=MessageType.TRAIN,
    )
    reply = next(iter(grid.pull_messages(list(grid.push_messages([message])))))
    return sent, next(iter(reply.content.array_records.values()))["w"].numpy()


def test_client_side_clipping_uses_flowers_mod_only_when_asked():
    sent, returned = _send_through_app({"clipping_norm": 0.5})
    assert float(np.linalg.norm(returned - sent)) == pytest.approx(0.5, rel=1e-5)
    sent, returned = _send_through_app({})
    np.testing.assert_allclose(returned, sent * 2.0 + 3.0)


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"strategy__aggregator": "median"}, "noise z·C/K is calibrated to a mean"),
        ({"strategy__name": "fedavg"}, "fedavg weights updates by examples"),
        ({"strategy__normalization": "weight_sum"}, "use normalization: count"),
        ({"strategy__weight_by_examples": True}, "set it to false"),
        ({"strategy__trust__enabled": True}, "disable trust"),
    ],
)
def test_central_dp_refuses_what_breaks_its_sensitivity(overrides, text):
    with pytest.raises(ConfigError, match=text):
        config(privacy__central__enabled=True, **overrides)


def test_allow_robust_accepts_a_median_with_central_dp():
    cfg = config(privacy__central__enabled=True, strategy__aggregator="median", privacy__central__allow_robust=True)
    assert cfg.strategy.aggregator == "median"


def test_central_dp_run_reports_a_growing_epsilon(tmp_path, learned):
    """FedBuff with client-side clipping (through the real ClientApp mods) and server noise."""
    cfg = config(
        run__output_dir=str(tmp_path), run__name="cdp", stop__num_updates=40, evaluation__every=20,
        output__plots=False, privacy__central__enabled=True, privacy__central__clipping="client",
        privacy__central__noise_multiplier=0.01, privacy__central__clipping_norm=5.0,
    )
    from fedstale.client_app import app  # pylint: disable=import-outside-toplevel

    run_dir = run_experiment(LocalGrid(app, num_nodes=2), cfg, CONFIGS / "default.yaml")
    rows = read_csv(run_dir / "metrics.csv")
    epsilons = [float(r["central_epsilon"]) for r in rows if r["central_epsilon"]]
    assert len(epsilons) == 2 and epsilons[0] < epsilons[-1]
    assert epsilons[-1] == pytest.approx(_dp_accounting_epsilon(0.01, 40, None), rel=1e-6)
    learned.at_least("final accuracy", float(rows[-1]["accuracy"]), 0.5)
    _, strategy, _ = run(config(stop__num_updates=2, privacy__central__enabled=True))
    assert strategy.central_dp.num_releases == 2


def test_shipped_central_dp_config_builds_its_mechanism():
    """configs/central_dp.yaml: 200 clients, K = 50, z = 1, C = 0.5, Poisson q = 50/200."""
    from fedstale.builders import build_strategy  # pylint: disable=import-outside-toplevel

    strategy = build_strategy(config("central_dp"))
    dp = strategy.central_dp
    assert (dp.noise_multiplier, dp.clipping_norm, dp.population_size, dp.sampling) == (1.0, 0.5, 200, "poisson")
    assert (strategy.buffer_size, strategy.concurrency) == (50, 100)
    assert dp.std(strategy.buffer_size) == pytest.approx(0.01)
