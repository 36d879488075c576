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
    clipped, weights = Clip(max_norm=2.0)(stack, _ones(10))
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
    expected = TrimmedMean(beta=0.2)(*NearestNeighbourMixing(f=2)(*Clip(max_norm=1.5)(stack, _ones(10))))
    _close(pipeline(stack, _ones(10)), expected.numpy())
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
