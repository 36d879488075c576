"""Datasets and partitioning, each keyed by the name used in YAML."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from .digits import load_digits_split
from .partition import PARTITIONERS, PartitionSpec, client_arrays, partition_indices
from .spec import DatasetSpec, SplitData

DATASETS: dict[str, Callable[[float, int], SplitData]] = {
    "digits": load_digits_split,
}
"""Registry keyed by ``data.dataset``: ``loader(test_fraction, seed)``."""


@lru_cache(maxsize=4)
def load_split(name: str, test_fraction: float, seed: int) -> SplitData:
    """Load dataset ``name`` split into the clients' pool and the test set."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; accepted: {', '.join(DATASETS)}")
    return DATASETS[name](test_fraction, seed)


@lru_cache(maxsize=4)
def _indices(
    name: str, test_fraction: float, spec: PartitionSpec
) -> tuple[np.ndarray, ...]:
    data = load_split(name, test_fraction, spec.seed)
    return tuple(partition_indices(data.y_train, spec))


def load_client_data(
    name: str, test_fraction: float, spec: PartitionSpec, client_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) training arrays of client ``client_id`` (cached per process)."""
    if not 0 <= client_id < spec.num_partitions:
        raise ValueError(
            f"client-id {client_id} is outside 0..{spec.num_partitions - 1}"
        )
    data = load_split(name, test_fraction, spec.seed)
    return client_arrays(data, list(_indices(name, test_fraction, spec)), client_id)


__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "DatasetSpec",
    "PartitionSpec",
    "SplitData",
    "load_client_data",
    "load_split",
]
