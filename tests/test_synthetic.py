"""FedProx's synthetic(α, β) data (``data.dataset: synthetic``) against its definition.

Li et al. 2020, Section 5.1: u_k ~ N(0, α), B_k ~ N(0, β); W_k, b_k entries
~ N(u_k, 1); v_k entries ~ N(B_k, 1); x ~ N(v_k, Σ), Σ_jj = j^-1.2;
y = argmax(W_k x + b_k). Statistical checks use a tolerance of 5 standard
errors computed from the sample size (a false failure has probability
below 1e-6 per check; the seeds are fixed, so the tests are deterministic).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstale.builders import check_data, data_split, partition_spec, train_config
from fedstale.config import ConfigError
from fedstale.data import PartitionSpec, SyntheticSpec, load_client_data
from fedstale.data import synthetic as syn
from fedstale.client.torch_client import partition_spec_from
from tests.helpers import config, run

Z = 5.0
"""Standard errors allowed in a statistical check."""


def _within(value: float, expected: float, stderr: float) -> bool:
    return abs(value - expected) <= Z * stderr


def _synthetic_config(**overrides):
    base = {
        "data__dataset": "synthetic",
        "model__name": "logreg",
        "data__num_clients": 50,
        "strategy__concurrency": 5,
        "output__plots": False,
    }
    return config(**(base | overrides))


# --- the generator ---------------------------------------------------------------------


def test_same_seed_and_client_give_the_same_arrays_and_other_seeds_or_clients_do_not():
    spec = SyntheticSpec(alpha=1.0, beta=1.0, num_clients=10)
    x1, y1 = syn.client_data(spec, 7, 3)
    x2, y2 = syn.client_data(spec, 7, 3)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.dtype == np.float32 and y1.dtype == np.int64 and x1.shape == (len(y1), 60)
    assert not np.array_equal(syn.client_data(spec, 8, 3)[0][:5], x1[:5])
    assert not np.array_equal(syn.client_data(spec, 7, 4)[0][:5], x1[:5])


def test_a_clients_data_does_not_depend_on_the_number_of_clients():
    small, huge = SyntheticSpec(num_clients=10), SyntheticSpec(num_clients=1_000_000)
    for k in (0, 9):
        assert np.array_equal(syn.client_data(small, 0, k)[0], syn.client_data(huge, 0, k)[0])
    a = load_client_data("synthetic", 0.2, PartitionSpec("dirichlet", 10, synthetic=small), 9)
    b = load_client_data("synthetic", 0.2, PartitionSpec("dirichlet", 10**6, synthetic=huge), 9)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_streams_are_the_documented_seed_sequences():
    """n_k and the model from spawn key (k, 0), in the documented order; x from (k, 1)."""
    spec, seed, k = SyntheticSpec(alpha=0.5, beta=1.0), 11, 42
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k, 0)))
    count = min(spec.min_samples + math.floor(rng.lognormal(4.0, 2.0)), spec.max_samples)
    u, b_mean = rng.normal(0, math.sqrt(0.5)), rng.normal(0, 1.0)
    weights, bias = rng.normal(u, 1, (10, 60)), rng.normal(u, 1, 10)
    mean = rng.normal(b_mean, 1, 60)
    model = syn.client_model(spec, seed, k)
    assert (model.num_examples, model.u, model.b_mean) == (count, u, b_mean)
    assert np.array_equal(model.weights, weights) and np.array_equal(model.bias, bias)
    assert np.array_equal(model.mean, mean)
    x_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k, 1)))
    x64 = mean + x_rng.standard_normal((count, 60)) * np.sqrt(np.arange(1, 61) ** -1.2)
    x, y = syn.client_data(spec, seed, k)
    assert np.array_equal(x, x64.astype(np.float32))
    # labels are argmax(softmax(W x + b)) = argmax(W x + b), exactly
    assert np.array_equal(y, np.argmax(x64 @ weights.T + bias, axis=1))
    softmax = np.exp(x64 @ weights.T + bias - (x64 @ weights.T + bias).max(axis=1, keepdims=True))
    assert np.array_equal(y, np.argmax(softmax / softmax.sum(axis=1, keepdims=True), axis=1))


def test_alpha_beta_zero_model_entries_are_standard_normal():
    """α = β = 0: u_k = B_k = 0, so W_k, b_k, v_k entries are N(0, 1) for every client."""
    spec = SyntheticSpec(alpha=0.0, beta=0.0)
    models = [syn.client_model(spec, 0, k) for k in range(300)]
    assert all(m.u == 0.0 and m.b_mean == 0.0 for m in models)
    for values in (
        np.concatenate([m.weights.ravel() for m in models]),
        np.concatenate([m.bias for m in models]),
        np.concatenate([m.mean for m in models]),
    ):
        n = len(values)
        assert _within(values.mean(), 0.0, 1 / math.sqrt(n))
        assert _within(values.var(), 1.0, math.sqrt(2 / n))


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (1.0, 0.5)])
def test_u_and_b_have_variances_alpha_and_beta_and_entries_centre_on_them(alpha, beta):
    spec = SyntheticSpec(alpha=alpha, beta=beta)
    models = [syn.client_model(spec, 1, k) for k in range(4000)]
    n = len(models)
    u = np.array([m.u for m in models])
    b_mean = np.array([m.b_mean for m in models])
    assert _within(u.mean(), 0.0, math.sqrt(alpha / n)) and _within(b_mean.mean(), 0.0, math.sqrt(beta / n))
    assert _within(u.var(), alpha, alpha * math.sqrt(2 / n))
    assert _within(b_mean.var(), beta, beta * math.sqrt(2 / n))
    w_dev = np.concatenate([(m.weights - m.u).ravel() for m in models[:200]])
    v_dev = np.concatenate([m.mean - m.b_mean for m in models[:200]])
    for dev in (w_dev, v_dev):
        assert _within(dev.mean(), 0.0, 1 / math.sqrt(len(dev)))
        assert _within(dev.var(), 1.0, math.sqrt(2 / len(dev)))


def test_inputs_have_mean_v_and_diagonal_covariance_j_to_the_minus_1_2():
    spec = SyntheticSpec(alpha=1.0, beta=1.0)
    model = syn.client_model(spec, 0, 5)
    n = 200_000
    x, _ = syn.draw_examples(model, n, 0, 5, syn.TRAIN_STREAM)
    x = x.astype(np.float64)
    sigma = np.arange(1, 61, dtype=np.float64) ** -1.2
    assert np.array_equal(syn.COVARIANCE, sigma)
    dev = x - model.mean
    assert np.all(np.abs(dev.mean(axis=0)) <= Z * np.sqrt(sigma / n))
    variance = (dev**2).mean(axis=0)  # around the known mean v_k
    assert np.all(np.abs(variance / sigma - 1) <= Z * math.sqrt(2 / n))
    off_diagonal = np.corrcoef(dev[:, :10].T)[np.triu_indices(10, 1)]
    assert np.all(np.abs(off_diagonal) <= Z / math.sqrt(n))


def test_sample_counts_follow_the_configured_lognormal_with_minimum_and_cap():
    spec = SyntheticSpec(samples_mu=3.0, samples_sigma=0.5, min_samples=5, max_samples=10**9)
    n = 5000
    counts = np.array([syn.client_model(spec, 0, k).num_examples for k in range(n)])
    tails = counts - 5  # floor(L), L ~ LogNormal(3, 0.5)
    assert tails.min() >= 0
    mean = math.exp(3.0 + 0.5**2 / 2)  # E[L]; the documented E[n_k] is 5 + this
    std = math.sqrt((math.exp(0.25) - 1) * math.exp(6.0 + 0.25))
    assert _within(tails.mean() + 0.5, mean, std / math.sqrt(n) + 0.5 / Z)  # floor: -0.5 ± 0.5
    # log L ~ N(3, 0.5): the median of floor(L) is floor(e^3) ± the sampling error
    assert abs(np.median(tails) - math.exp(3.0)) <= 1 + Z * 1.2533 * 0.5 * math.exp(3.0) / math.sqrt(n)
    capped = SyntheticSpec(samples_mu=3.0, samples_sigma=0.5, min_samples=5, max_samples=30)
    capped_counts = [syn.client_model(capped, 0, k).num_examples for k in range(500)]
    assert max(capped_counts) == 30 and min(capped_counts) >= 5
    fixed = SyntheticSpec(samples_mu=2.0, samples_sigma=0.0, min_samples=3)
    assert {syn.client_model(fixed, 0, k).num_examples for k in range(20)} == {3 + 7}  # ⌊e²⌋ = 7


def test_iid_variant_shares_model_and_input_mean_across_clients():
    spec = SyntheticSpec(iid=True, alpha=1.0, beta=1.0)
    a, b = syn.client_model(spec, 3, 0), syn.client_model(spec, 3, 999_999)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
    assert not a.mean.any() and not b.mean.any()
    assert not np.array_equal(syn.client_data(spec, 3, 0)[0][:3], syn.client_data(spec, 3, 1)[0][:3])


def test_server_test_set_is_fresh_examples_of_a_seeded_sample_of_clients():
    spec = SyntheticSpec(alpha=0.5, beta=0.5, test_clients=7, num_clients=1_000_000, max_samples=200)
    ids = syn.server_clients(spec, 2)
    assert len(ids) == 7 and len(set(ids.tolist())) == 7 and ids.max() < 1_000_000
    assert np.array_equal(ids, syn.server_clients(spec, 2))
    split = syn.synthetic_split(spec, 0.25, 2, server_val_size=10)
    sizes = [math.ceil(0.25 * syn.client_model(spec, 2, k).num_examples) for k in ids.tolist()]
    assert len(split.y_test) == sum(sizes) <= 7 * math.ceil(0.25 * 200)
    assert split.x_val.shape == (10, 60) and len(split.y_train) == 0
    first = int(ids[0])
    train_x, _ = syn.client_data(spec, 2, first)
    assert not np.isin(split.x_test[: sizes[0], 0], train_x[:, 0]).any()  # not its training data
    few = SyntheticSpec(test_clients=100, num_clients=4)
    assert syn.server_clients(few, 0).tolist() == [0, 1, 2, 3]


# --- wiring: config, messages, server check, fairness -------------------------------------


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ConfigError) as err:
        _synthetic_config(model__name="cnn", data__partitioner="iid", data__synthetic__max_samples=10)
    text = str(err.value)
    assert "data.partitioner: 'iid' does not apply to data.dataset synthetic" in text
    assert "remove data.partitioner" in text
    assert "model.name: data.dataset synthetic gives 60 flat features; use one of logreg, mlp" in text
    assert "data.synthetic.max_samples: must be >= data.synthetic.min_samples (50)" in text
    with pytest.raises(ConfigError, match="data.synthetic.alpha"):
        _synthetic_config(data__synthetic__alpha=-1)
    with pytest.raises(ConfigError, match="data.synthetic.min_samples: evaluation.fairness"):
        _synthetic_config(evaluation__fairness=True, data__synthetic__min_samples=1)


def test_clients_rebuild_the_servers_spec_from_the_message():
    cfg = _synthetic_config(data__dataset="synthetic_iid", data__synthetic__alpha=1.0, data__synthetic__samples_sigma=0.5)
    message = dict(train_config(cfg)) | {"num-clients": cfg.data.num_clients}
    assert partition_spec_from(message, 2) == partition_spec(cfg)
    assert partition_spec(cfg).synthetic.iid and partition_spec(cfg).synthetic.alpha == 1.0


def test_server_check_of_a_million_clients_generates_only_a_few(monkeypatch):
    cfg = _synthetic_config(data__num_clients=1_000_000, strategy__concurrency=1000)
    calls = []
    original = syn.client_model
    monkeypatch.setattr(syn, "client_model", lambda *a: calls.append(a[2]) or original(*a))
    check_data(cfg)
    assert len(calls) <= cfg.data.synthetic.test_clients + 1
    assert len(data_split(cfg).y_test) <= 100 * math.ceil(0.2 * 1000)


def test_fairness_held_out_split_partitions_each_clients_examples():
    cfg = _synthetic_config(evaluation__fairness=True, evaluation__held_out=0.25)
    spec = partition_spec(cfg)
    whole = load_client_data("synthetic", 0.2, spec, 3)
    train = load_client_data("synthetic", 0.2, spec, 3, held_out=0.25)
    held = load_client_data("synthetic", 0.2, spec, 3, held_out=0.25, part="held")
    assert len(train[1]) + len(held[1]) == len(whole[1])
    assert len(held[1]) == round(0.25 * len(whole[1]))
    rows = sorted(map(tuple, np.concatenate([train[0], held[0]]).tolist()))
    assert rows == sorted(map(tuple, whole[0].tolist()))


def test_a_short_in_process_run_on_synthetic_is_deterministic_and_evaluates():
    cfg = _synthetic_config(
        stop__num_updates=8, evaluation__every=4, strategy__buffer_size=2,
        evaluation__fairness=True, data__num_clients=20,
    )
    result, _, recorder = run(cfg)
    again = run(cfg)[2]
    def virtual(rows):  # everything but the wall-clock columns
        return [{k: v for k, v in row.items() if "wall" not in k and "seconds" not in k} for row in rows]

    assert virtual(recorder.evaluations) == virtual(again.evaluations)
    assert virtual(recorder.updates) == virtual(again.updates)
    assert recorder.versions[-1] == 8 and [r["version"] for r in recorder.evaluations][-1] == 8
    last = recorder.evaluations[-1]
    assert 0.0 <= last["accuracy"] <= 1.0
    assert {row["client_id"] for row in recorder.client_accuracy} == set(range(20))
    assert set(result.arrays.keys()) == {"net.1.weight", "net.1.bias"}
    assert {row["client_id"] for row in recorder.updates} <= set(range(20))


def test_a_clients_reported_size_is_its_training_set_size_without_generating_it():
    from fedstale.data import synthetic_train_size

    cfg = _synthetic_config(evaluation__fairness=True, evaluation__held_out=0.3)
    spec = partition_spec(cfg)
    for k in (0, 7, 49):
        assert synthetic_train_size("synthetic", spec, k) == len(load_client_data("synthetic", 0.2, spec, k)[1])
        assert synthetic_train_size("synthetic", spec, k, 0.3) == len(
            load_client_data("synthetic", 0.2, spec, k, held_out=0.3)[1]
        )
