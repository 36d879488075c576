"""Split the training pool among clients with flwr-datasets partitioners.

The pool is wrapped in a local ``datasets.Dataset`` (no download) and handed
to Flower's partitioners, keyed by the names used in YAML
(``data.partitioner``):

- ``iid``: :class:`flwr_datasets.partitioner.IidPartitioner` over the pool
  shuffled with the data seed;
- ``dirichlet``: :class:`~flwr_datasets.partitioner.DirichletPartitioner`
  (label proportions ~ Dir(α), at least ``min_partition_size`` examples each);
- ``pathological``: :class:`~flwr_datasets.partitioner.PathologicalPartitioner`
  (``classes_per_client`` labels per client).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import SplitData

PARTITIONERS = ("iid", "dirichlet", "pathological")


@dataclass(frozen=True)
class PartitionSpec:
    """How the training pool is split (the ``data`` section of the config)."""

    partitioner: str
    num_partitions: int
    alpha: float = 0.5
    min_partition_size: int = 10
    classes_per_client: int = 2
    seed: int = 0


def make_partitioner(spec: PartitionSpec):  # type: ignore[no-untyped-def]
    """Build the flwr-datasets partitioner named by ``spec.partitioner``."""
    # pylint: disable=import-outside-toplevel
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if spec.partitioner == "iid":
        return IidPartitioner(num_partitions=spec.num_partitions)
    if spec.partitioner == "dirichlet":
        return DirichletPartitioner(
            num_partitions=spec.num_partitions,
            partition_by="label",
            alpha=spec.alpha,
            min_partition_size=spec.min_partition_size,
            seed=spec.seed,
        )
    if spec.partitioner == "pathological":
        return PathologicalPartitioner(
            num_partitions=spec.num_partitions,
            partition_by="label",
            num_classes_per_partition=spec.classes_per_client,
            seed=spec.seed,
        )
    raise ValueError(
        f"unknown partitioner '{spec.partitioner}'; accepted: {', '.join(PARTITIONERS)}"
    )


def partition_indices(labels: np.ndarray, spec: PartitionSpec) -> list[np.ndarray]:
    """Indices into the pool of every client's partition."""
    import datasets  # pylint: disable=import-outside-toplevel

    order = np.random.default_rng(spec.seed).permutation(len(labels))
    pool = datasets.Dataset.from_dict(
        {"index": order.tolist(), "label": labels[order].tolist()}
    )
    partitioner = make_partitioner(spec)
    partitioner.dataset = pool
    return [
        np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64)
        for i in range(spec.num_partitions)
    ]


def client_arrays(
    data: SplitData, indices: list[np.ndarray], client_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) arrays of one client."""
    idx = indices[client_id]
    return data.x_train[idx], data.y_train[idx]
