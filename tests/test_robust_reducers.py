"""Robust reducers and pre-aggregators against Flower's and byzfl's implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from byzfl import Bucketing as ByzBucketing
from byzfl import CenteredClipping as ByzCenteredClipping
from byzfl import Clipping as ByzClipping
from byzfl import GeometricMedian as ByzGeometricMedian
from byzfl import Krum as ByzKrum
from byzfl import Median as ByzMedian
from byzfl import NNM as ByzNNM
from byzfl import TrMean as ByzTrMean
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan as FlowerBulyan
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, MultiKrum as FlowerMultiKrum
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedstale.aggregation import make_aggregator, parse_aggregator
from fedstale.aggregation.preaggregators import Bucketing, Clip, NearestNeighbourMixing
from fedstale.aggregation.reducers import (
    Bulyan,
    CenteredClipping,
    GeometricMedian,
    Krum,
    Median,
    MultiKrum,
    TrimmedMean,
)
from fedstale.simulation.local_grid import _ensure_task_identity

SHAPES = [(5, 7), (8, 30), (13, 50), (20, 11)]


def _stack(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32))


def _ones(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.float32)


def _replies(stack: torch.Tensor) -> list[Message]:
    """Flower reply messages holding the rows (as two arrays), equal num-examples."""
    _ensure_task_identity()
    replies = []
    for row in stack.numpy():
        content = RecordDict(
            {
                "arrays": ArrayRecord([row[:3].copy(), row[3:].copy()]),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        request = Message(RecordDict(), dst_node_id=5, message_type="train")
        request.metadata.__dict__["_message_id"] = "m"
        replies.append(Message(content, reply_to=request))
    return replies


def _flat(arrays: ArrayRecord) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays.to_numpy_ndarrays()])


def _close(ours: torch.Tensor, reference) -> None:
    reference = np.asarray(reference, dtype=np.float64)
    np.testing.assert_allclose(ours.double().numpy(), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_median_matches_flower_and_byzfl(n, d):
    stack = _stack(n, d, n)
    ours = Median()(stack, _ones(n))
    arrays, _ = FedMedian().aggregate_train(1, _replies(stack))
    _close(ours, _flat(arrays))
    _close(ours, ByzMedian()(stack.numpy()))


@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("beta", [0.1, 0.2, 0.3])
def test_trimmed_mean_matches_flower_and_byzfl(n, d, beta):
    stack = _stack(n, d, n + 1)
    ours = TrimmedMean(beta=beta)(stack, _ones(n))
    _close(ours, trim_mean(stack.numpy(), beta))
    arrays, _ = FedTrimmedAvg(beta=beta).aggregate_train(1, _replies(stack))
    _close(ours, _flat(arrays))
    cut = int(beta * n)
    if cut > 0:
        _close(ours, ByzTrMean(f=cut)(stack.numpy()))


@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("f", [0, 1])
def test_krum_and_multi_krum_match_flower(n, d, f):
    stack = _stack(n, d, n + 2)
    contents = [r.content for r in _replies(stack)]
    for m in (1, 3, n - f):
        chosen = select_multikrum(contents, num_malicious_nodes=f, num_nodes_to_select=m)
        reference = np.mean([_flat(c["arrays"]) for c in chosen], axis=0)
        ours = (Krum(f=f) if m == 1 else MultiKrum(f=f, m=m))(stack, _ones(n))
        _close(ours, reference)
    arrays, _ = FlowerMultiKrum(num_malicious_nodes=f, num_nodes_to_select=n - f).aggregate_train(
        1, _replies(stack)
    )
    _close(MultiKrum(f=f)(stack, _ones(n)), _flat(arrays))


def test_krum_matches_byzfl_with_its_neighbour_count():
    """byzfl scores with n − f − 1 neighbours (Flower and the paper: n − f − 2).

    Krum with f is therefore byzfl's Krum with f + 1.
    """
    stack = _stack(11, 20, 3)
    _close(Krum(f=2)(stack, _ones(11)), ByzKrum(f=3)(stack.numpy()))


@pytest.mark.parametrize(("n", "f"), [(7, 1), (11, 2), (20, 4)])
def test_bulyan_matches_flower(n, f):
    stack = _stack(n, 9, n + 3)
    arrays, _ = FlowerBulyan(num_malicious_nodes=f).aggregate_train(1, _replies(stack))
    _close(Bulyan(f=f)(stack, _ones(n)), _flat(arrays))


@pytest.mark.parametrize(("nu", "iterations"), [(0.1, 3), (1.0, 10)])
def test_geometric_median_matches_byzfl(nu, iterations):
    stack = _stack(12, 25, 4)
    ours = GeometricMedian(nu=nu, iterations=iterations)(stack, _ones(12))
    _close(ours, ByzGeometricMedian(nu=nu, T=iterations)(stack.numpy()))


def test_centered_clipping_matches_byzfl_across_calls_and_resets():
    first, second = _stack(9, 15, 5), _stack(9, 15, 6)
    ours = CenteredClipping(tau=0.5, iterations=2)
    reference = ByzCenteredClipping(tau=0.5, L=2)
    _close(ours(first, _ones(9)), reference(first.numpy()))
    _close(ours(second, _ones(9)), reference(second.numpy()))  # both kept their center
    ours.reset()
    _close(ours(first, _ones(9)), ByzCenteredClipping(tau=0.5, L=2)(first.numpy()))


def test_clip_and_nnm_match_byzfl():
    stack = _stack(10, 12, 7)
    clipped, weights = Clip(max_norm=2.0)(stack.clone(), _ones(10))  # clip rescales in place
    _close(clipped.flatten(), ByzClipping(c=2.0)(stack.clone().numpy()).flatten())
    assert torch.equal(weights, _ones(10))
    mixed, _ = NearestNeighbourMixing(f=3)(stack, _ones(10))
    _close(mixed.flatten(), ByzNNM(f=3)(stack.numpy()).flatten())


def test_bucketing_means_buckets_of_a_seeded_permutation():
    """Bucket means equal byzfl's on the same permutation; same seed, same buckets."""
    stack = _stack(7, 4, 8)
    weights = torch.arange(1.0, 8.0)
    out, bucket_weights = Bucketing(bucket_size=3, seed=0)(stack, weights)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    expected = torch.stack(
        [stack[order[0:3]].mean(0), stack[order[3:6]].mean(0), stack[order[6:]].mean(0)]
    )
    _close(out.flatten(), expected.flatten())
    assert bucket_weights.tolist() == pytest.approx(
        [float(weights[order[0:3]].mean()), float(weights[order[3:6]].mean()), float(weights[order[6]])]
    )
    assert out.shape == ByzBucketing(s=3)(stack.numpy()).shape
    again, _ = Bucketing(bucket_size=3, seed=0)(stack, weights)
    assert torch.equal(out, again)


def test_hand_computed_cases():
    column = torch.tensor([[1.0], [2.0], [10.0]])
    assert Median()(column, _ones(3)).item() == 2.0
    assert Median()(torch.tensor([[1.0], [2.0], [4.0], [10.0]]), _ones(4)).item() == 3.0
    five = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0]])
    assert TrimmedMean(beta=0.2)(five, _ones(5)).item() == pytest.approx(3.0)
    # Krum (f = 1, n = 6: 3 neighbours): scores 0.0825 for 0.1 and 0.0725 for
    # 0.2 (0.01 + 0.0225 + 0.04), the smallest; the far points score ~2500.
    points = torch.tensor([[0.0], [0.1], [0.2], [0.35], [50.0], [60.0]])
    assert Krum(f=1)(points, _ones(6)).item() == pytest.approx(0.2)


def test_zero_weight_rows_are_left_out():
    stack = torch.tensor([[1.0], [2.0], [3.0], [1000.0]])
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert Median()(stack, weights).item() == 2.0
    assert make_aggregator("clip>median", clip_norm=5.0)(stack, weights).item() == 2.0


def test_too_few_updates_are_refused_with_the_requirement():
    with pytest.raises(ValueError, match="krum needs at least 5 updates, got 4"):
        Krum(f=1)(_stack(4, 3, 0), _ones(4))
    with pytest.raises(ValueError, match="bulyan needs at least 11 updates, got 10"):
        Bulyan(f=2)(_stack(10, 3, 0), _ones(10))
    assert make_aggregator("bucketing>krum", f=1, bucket_size=2).required_updates() == 10


def test_pipeline_parsing_and_parameters():
    assert parse_aggregator("clip > nnm>trimmed_mean") == (["clip", "nnm"], "trimmed_mean")
    pipeline = make_aggregator("clip>nnm>trimmed_mean", clip_norm=1.5, f=2, beta=0.2)
    assert pipeline.name == "clip>nnm>trimmed_mean"
    assert pipeline.stages[0].max_norm == 1.5 and pipeline.stages[1].f == 2
    assert pipeline.reducer.beta == 0.2
    stack = _stack(10, 6, 9)
    expected = TrimmedMean(beta=0.2)(
        *NearestNeighbourMixing(f=2)(*Clip(max_norm=1.5)(stack.clone(), _ones(10)))
    )
    _close(pipeline(stack.clone(), _ones(10)), expected.numpy())
    with pytest.raises(ValueError, match="'median' is not a pre-aggregator"):
        parse_aggregator("median>mean")
    with pytest.raises(ValueError, match="'clip' is not a reducer"):
        parse_aggregator("clip")
    with pytest.raises(ValueError, match="empty stage"):
        parse_aggregator("clip>>mean")


def test_sorted_columns_leaves_the_input_alone_and_matches_torch_sort():
    """The CPU path (NumPy's sort) works on a copy and equals torch.sort."""
    from fedstale.aggregation import reducers

    for shape in [(1, 7), (6, 1), (9, 1000)]:
        stack = _stack(*shape, seed=1)
        before = stack.clone()
        ours = reducers._sorted_columns(stack)
        assert torch.equal(stack, before)
        assert torch.equal(ours, torch.sort(stack, dim=0).values)


def test_distances_to_over_several_blocks_matches_the_direct_norm():
    from fedstale.aggregation import reducers

    stack = _stack(5, reducers.DISTANCE_BLOCK * 2 + 3, seed=2)
    point = stack.mean(dim=0)
    direct = torch.linalg.vector_norm((stack - point).double(), dim=1)
    torch.testing.assert_close(reducers.distances_to(stack, point), direct, rtol=1e-6, atol=0)


def _sorted_trimmed_mean(stack: torch.Tensor, cut: int) -> torch.Tensor:
    """The reference definition: sort each coordinate, average the middle."""
    n = len(stack)
    return torch.sort(stack.double(), dim=0).values[cut : n - cut].mean(dim=0)


@pytest.mark.parametrize(
    ("n", "d", "cut"),
    [(3, 5, 1), (13, 700, 2), (50, 2 * 512 + 37, 5), (20, 3000, 8), (25, 600, 12)],
)
def test_trimmed_mean_kernel_keeps_the_same_values_as_the_sort(n, d, cut):
    """Odd sizes (partial blocks, several threads' ranges), ties, float64."""
    from fedstale.aggregation import kernels

    stack = _stack(n, d, seed=n + d)
    before = stack.clone()
    _close(kernels.trimmed_mean(stack, cut), _sorted_trimmed_mean(stack, cut).numpy())
    assert torch.equal(stack, before)
    # Heavy ties: values in {0, 1, 2}, so kept and dropped values coincide.
    ties = torch.from_numpy(np.random.default_rng(d).integers(0, 3, size=(n, d)).astype(np.float32))
    _close(kernels.trimmed_mean(ties, cut), _sorted_trimmed_mean(ties, cut).numpy())
    wide = stack.double() * 1e3
    out = kernels.trimmed_mean(wide, cut)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), _sorted_trimmed_mean(wide, cut).numpy(), rtol=1e-12, atol=1e-9)


def test_trimmed_mean_kernel_refuses_a_cut_it_does_not_handle():
    from fedstale.aggregation import kernels

    with pytest.raises(ValueError, match=r"cut must be in \[1, 12\] and 2·cut < n"):
        kernels.trimmed_mean(_stack(30, 4, 0), 13)
    with pytest.raises(ValueError, match="2·cut < n"):
        kernels.trimmed_mean(_stack(10, 4, 0), 5)


def test_large_trimmed_mean_goes_through_the_kernel_and_matches_flower_and_byzfl(monkeypatch):
    """A stack above KERNEL_MIN_VALUES takes the kernel; same numbers as both
    references and as the sorting path."""
    from fedstale.aggregation import kernels, reducers

    n, d, beta = 20, reducers.KERNEL_MIN_VALUES // 20 + 3, 0.2
    stack = _stack(n, d, seed=4)
    calls = []
    real = kernels.trimmed_mean
    monkeypatch.setattr(kernels, "trimmed_mean", lambda u, cut: calls.append(cut) or real(u, cut))
    ours = TrimmedMean(beta=beta)(stack, _ones(n))
    assert calls == [4]
    _close(ours, ByzTrMean(f=4)(stack.numpy()))
    _close(ours, trim_mean(stack.numpy(), beta))
    monkeypatch.setattr(kernels, "available", lambda: False)
    sorted_path = TrimmedMean(beta=beta)(stack, _ones(n))
    assert calls == [4]
    _close(ours, sorted_path.numpy())


def test_trimmed_mean_with_non_finite_values_falls_back_to_the_sort():
    """An infinite value (trimmed away) makes the kernel's total NaN: the
    reducer then sorts, as the references do."""
    from fedstale.aggregation import reducers

    n, d = 10, reducers.KERNEL_MIN_VALUES // 10
    stack = _stack(n, d, seed=5)
    stack[3, 7] = float("inf")
    stack[6, 9] = -float("inf")
    ours = TrimmedMean(beta=0.1)(stack, _ones(n))
    assert bool(torch.isfinite(ours).all())
    _close(ours, ByzTrMean(f=1)(stack.numpy()))


def test_clip_rescales_in_place_and_other_stages_write_a_new_stack():
    """clip owns its stack and rescales the rows above c in place (as byzfl's
    Clipping); rows within c are not touched; nnm and bucketing leave their
    input alone; a pipeline hands the caller's tensor to its stages."""
    stack = _stack(12, 40, seed=6) * 5
    stack[3] /= 100.0  # one row already within the bound
    small = stack[3].clone()
    clipped, _ = Clip(max_norm=1.0)(stack, _ones(12))
    assert clipped.data_ptr() == stack.data_ptr()
    norms = torch.linalg.vector_norm(clipped, dim=1).numpy()
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, rtol=1e-6)
    assert torch.equal(clipped[3], small)
    fresh = _stack(12, 40, seed=6)
    before = fresh.clone()
    means, _ = Bucketing(bucket_size=3, seed=1)(fresh, _ones(12))
    mixed, _ = NearestNeighbourMixing(f=1)(fresh, _ones(12))
    assert means.shape == (4, 40) and mixed.shape == (12, 40)
    assert torch.equal(fresh, before)
    make_aggregator("clip>mean", clip_norm=1.0)(fresh, _ones(12))
    np.testing.assert_allclose(torch.linalg.vector_norm(fresh, dim=1).numpy(), 1.0, rtol=1e-6)


def test_strategies_score_trust_on_the_deltas_before_clipping():
    """FedBuff hands its stack to clip>mean after scoring: the first buffer's
    trust scores are the plain mean's (clip at 0.01 rescales every delta in
    place, so scoring after it would see other deltas)."""
    from tests.helpers import config, run  # pylint: disable=import-outside-toplevel

    scores = {}
    for aggregator in ("mean", "clip>mean"):
        _, strategy, _ = run(config(stop__num_updates=1, strategy__aggregator=aggregator,
                                    strategy__robust__clip_norm=0.01,
                                    strategy__trust__enabled=True))
        scores[aggregator] = dict(strategy.trust._trust)
    assert scores["mean"] and scores["mean"] == scores["clip>mean"]


def test_clip_and_bucketing_on_a_larger_stack_match_byzfl():
    """Clip in place and bucketing into a NumPy-allocated stack: same values as byzfl."""
    stack = _stack(9, 5000, seed=7)
    clipped, _ = Clip(max_norm=3.0)(stack.clone(), _ones(9))
    _close(clipped.flatten(), ByzClipping(c=3.0)(stack.clone().numpy()).flatten())
    means, weights = Bucketing(bucket_size=2, seed=3)(stack, torch.arange(1.0, 10.0))
    order = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    expected = torch.stack([stack[order[i : i + 2]].mean(0) for i in range(0, 9, 2)])
    _close(means.flatten(), expected.flatten())
    assert weights.tolist() == pytest.approx([float((order[i : i + 2] + 1.0).mean()) for i in range(0, 9, 2)])


def test_importing_the_aggregation_package_does_not_import_numba():
    """Numba is imported when the trimmed-mean kernel is first compiled, not by
    every process that imports fedstale (ClientApps never aggregate)."""
    import subprocess
    import sys

    code = "import sys, fedstale.aggregation; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
