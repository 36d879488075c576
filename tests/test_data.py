"""Tests of the digits loader and the flwr-datasets partitioning (fedstale/data)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstale.data import PartitionSpec, load_client_data, load_split
from fedstale.data.partition import make_partitioner, partition_indices

NUM_CLIENTS = 20
TOTAL = 1797  # scikit-learn's digits
# per-class counts of scikit-learn's digits (load_digits().target), 0..9
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope="module")
def split():  # type: ignore[no-untyped-def]
    """The default split: 20% test, seed 0."""
    return load_split("digits", 0.2, 0)


def _check_disjoint(parts: list[np.ndarray]) -> np.ndarray:
    everything = np.concatenate(parts)
    assert len(everything) == len(np.unique(everything)), "partitions overlap"
    return everything


# --------------------------------------------------------------------------
# Digits split
# --------------------------------------------------------------------------


def test_digits_sizes_and_shapes(split) -> None:  # type: ignore[no-untyped-def]
    """1797 images, a 20% test set (rounded up), shapes (N, 1, 8, 8)."""
    n_test = math.ceil(0.2 * TOTAL)  # 360
    assert len(split.x_train) + len(split.x_test) == TOTAL
    assert len(split.x_test) == len(split.y_test) == n_test
    assert split.x_train.shape == (TOTAL - n_test, 1, 8, 8)
    assert split.x_test.shape == (n_test, 1, 8, 8)
    assert split.x_train.dtype == np.float32
    assert split.y_train.dtype == np.int64
    assert split.spec.input_shape == (1, 8, 8)
    assert split.spec.num_classes == 10


def test_digits_pixels_in_unit_interval(split) -> None:  # type: ignore[no-untyped-def]
    """Pixels are scaled from 0..16 to [0, 1] and reach both ends."""
    for x in (split.x_train, split.x_test):
        assert float(x.min()) == 0.0
        assert float(x.max()) == 1.0
    # every value is a multiple of 1/16
    values = np.unique(np.concatenate([split.x_train.ravel(), split.x_test.ravel()]) * 16)
    assert np.array_equal(values, np.arange(17, dtype=np.float32))


def test_digits_split_is_stratified(split) -> None:  # type: ignore[no-untyped-def]
    """Each class keeps its share in the test set (within one example)."""
    test_counts = np.bincount(split.y_test, minlength=10)
    all_counts = test_counts + np.bincount(split.y_train, minlength=10)
    assert all_counts.tolist() == CLASS_COUNTS
    assert (test_counts > 0).all()
    assert np.abs(test_counts - 0.2 * all_counts).max() <= 1.0


def test_unknown_dataset() -> None:
    """An unknown dataset name raises ValueError listing the known ones."""
    with pytest.raises(
        ValueError,
        match=r"^unknown dataset 'mnst'; accepted: digits, mnist, fashion_mnist, cifar10, cifar100, text, synthetic, synthetic_iid$",
    ):
        load_split("mnst", 0.2, 0)


# --------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------


def test_iid_partitions_cover_pool(split) -> None:  # type: ignore[no-untyped-def]
    """iid: 20 disjoint partitions of ⌊1437/20⌋ or ⌈1437/20⌉ covering the pool."""
    parts = partition_indices(split.y_train, PartitionSpec("iid", NUM_CLIENTS))
    assert len(parts) == NUM_CLIENTS
    everything = _check_disjoint(parts)
    assert np.array_equal(np.sort(everything), np.arange(len(split.y_train)))
    assert {len(p) for p in parts} <= {1437 // 20, 1437 // 20 + 1}  # 71, 72


@pytest.mark.parametrize(("alpha", "min_size"), [(0.5, 10), (1.0, 40)])
def test_dirichlet_partitions_cover_pool(split, alpha: float, min_size: int) -> None:  # type: ignore[no-untyped-def]
    """dirichlet: disjoint, cover the pool, each ≥ min_partition_size."""
    spec = PartitionSpec("dirichlet", NUM_CLIENTS, alpha=alpha, min_partition_size=min_size)
    parts = partition_indices(split.y_train, spec)
    assert len(parts) == NUM_CLIENTS
    everything = _check_disjoint(parts)
    assert np.array_equal(np.sort(everything), np.arange(len(split.y_train)))
    assert min(len(p) for p in parts) >= min_size


@pytest.mark.parametrize("classes", [1, 2, 3])
def test_pathological_partitions(split, classes: int) -> None:  # type: ignore[no-untyped-def]
    """pathological: disjoint, at most classes_per_client labels each."""
    spec = PartitionSpec("pathological", NUM_CLIENTS, classes_per_client=classes, seed=1)
    parts = partition_indices(split.y_train, spec)
    assert len(parts) == NUM_CLIENTS
    everything = _check_disjoint(parts)
    assert everything.min() >= 0 and everything.max() < len(split.y_train)
    too_many = [i for i, p in enumerate(parts) if len(np.unique(split.y_train[p])) > classes]
    assert too_many == []


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological"])
def test_partitions_deterministic(split, partitioner: str) -> None:  # type: ignore[no-untyped-def]
    """The same spec gives identical indices."""
    spec = PartitionSpec(partitioner, NUM_CLIENTS, seed=3)
    first = partition_indices(split.y_train, spec)
    second = partition_indices(split.y_train, spec)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_dirichlet_depends_on_seed(split) -> None:  # type: ignore[no-untyped-def]
    """A different data seed gives a different dirichlet partition."""
    a = partition_indices(split.y_train, PartitionSpec("dirichlet", NUM_CLIENTS, seed=0))
    b = partition_indices(split.y_train, PartitionSpec("dirichlet", NUM_CLIENTS, seed=1))
    differing = sum(not np.array_equal(np.sort(x), np.sort(y)) for x, y in zip(a, b))
    assert differing >= NUM_CLIENTS // 2


def test_unknown_partitioner() -> None:
    """An unknown partitioner name raises ValueError listing the accepted ones."""
    with pytest.raises(ValueError) as info:
        make_partitioner(PartitionSpec("shards", 5))
    assert str(info.value) == "unknown partitioner 'shards'; accepted: iid, dirichlet, pathological"


# --------------------------------------------------------------------------
# Per-client data
# --------------------------------------------------------------------------


def test_load_client_data_matches_partition(split) -> None:  # type: ignore[no-untyped-def]
    """A client's arrays are the pool rows of its partition; clients' sizes add up."""
    spec = PartitionSpec("dirichlet", NUM_CLIENTS, seed=0)
    parts = partition_indices(split.y_train, spec)
    x, y = load_client_data("digits", 0.2, spec, 7)
    assert np.array_equal(y, split.y_train[parts[7]])
    assert np.array_equal(x, split.x_train[parts[7]])
    sizes = [len(load_client_data("digits", 0.2, spec, c)[1]) for c in range(NUM_CLIENTS)]
    assert sum(sizes) == len(split.y_train) == TOTAL - 360


@pytest.mark.parametrize("client_id", [-1, NUM_CLIENTS, 100])
def test_load_client_data_out_of_range(client_id: int) -> None:
    """A client id outside 0..num_partitions−1 raises ValueError."""
    spec = PartitionSpec("iid", NUM_CLIENTS)
    with pytest.raises(ValueError) as info:
        load_client_data("digits", 0.2, spec, client_id)
    assert str(info.value) == f"client-id {client_id} is outside 0..19"
