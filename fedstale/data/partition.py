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

A partitioning that cannot be done (more clients than examples, a Dirichlet
minimum size that flwr-datasets' rejection sampling does not reach, a client
left with no example) raises :class:`PartitionError`, naming the config
fields to change. The ServerApp partitions once before the run starts
(:func:`fedstale.data_setup.check_data`), so such a run stops within seconds
instead of failing on every client.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .spec import SplitData
from .synthetic import SyntheticSpec

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
    synthetic: SyntheticSpec | None = None
    """The ``data.synthetic`` parameters (``data.dataset`` synthetic; else unused)."""


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


class PartitionError(ValueError):
    """The training pool cannot be split as the ``data`` section asks."""


def partition_indices(labels: np.ndarray, spec: PartitionSpec) -> list[np.ndarray]:
    """Indices into the pool of every client's partition.

    Raises
    ------
    PartitionError
        If the pool has fewer examples than clients, if flwr-datasets'
        Dirichlet sampling cannot give every client ``min_partition_size``
        examples, or if a client is left with none; the message names
        ``data.num_clients`` and the partitioner's fields with what to change.
    """
    import datasets  # pylint: disable=import-outside-toplevel

    pool_size = len(labels)
    if spec.num_partitions > pool_size:
        raise PartitionError(
            f"data.num_clients ({spec.num_partitions}) is larger than the training pool "
            f"({pool_size} examples): every client needs at least one example; set "
            f"data.num_clients to at most {pool_size}"
        )
    if spec.partitioner == "dirichlet" and spec.num_partitions * spec.min_partition_size > pool_size:
        raise PartitionError(
            f"data.num_clients ({spec.num_partitions}) x data.min_partition_size "
            f"({spec.min_partition_size}) is more than the training pool ({pool_size} "
            f"examples); lower data.min_partition_size to at most "
            f"{pool_size // spec.num_partitions} or data.num_clients to at most "
            f"{pool_size // max(1, spec.min_partition_size)}"
        )
    order = np.random.default_rng(spec.seed).permutation(pool_size)
    pool = datasets.Dataset.from_dict(
        {"index": order.tolist(), "label": labels[order].tolist()}
    )
    partitioner = make_partitioner(spec)
    partitioner.dataset = pool
    with warnings.catch_warnings():
        # DirichletPartitioner warns once per rejected draw; a draw that
        # fails for good is reported below, once, with what to change.
        warnings.filterwarnings("ignore", message="The specified min_partition_size")
        try:
            parts = [
                np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64)
                for i in range(spec.num_partitions)
            ]
        except ValueError as err:
            if spec.partitioner != "dirichlet":
                raise
            raise PartitionError(
                f"data.partitioner 'dirichlet' could not give each of data.num_clients "
                f"({spec.num_partitions}) clients at least data.min_partition_size "
                f"({spec.min_partition_size}) of {pool_size} examples with data.alpha "
                f"({spec.alpha:g}) ({err}); lower data.min_partition_size or "
                f"data.num_clients, or raise data.alpha (more even label shares)"
            ) from err
    empty = [i for i, part in enumerate(parts) if len(part) == 0]
    if empty:
        shown = ", ".join(str(i) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
        hint = {
            "pathological": "raise data.classes_per_client or lower data.num_clients",
            "dirichlet": "raise data.min_partition_size (at least 1) or lower data.num_clients",
        }.get(spec.partitioner, "lower data.num_clients")
        raise PartitionError(
            f"data.partitioner '{spec.partitioner}' leaves {len(empty)} of data.num_clients "
            f"({spec.num_partitions}) clients with no example (clients {shown}); {hint}"
        )
    return parts


def client_arrays(
    data: SplitData, indices: Sequence[np.ndarray], client_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) arrays of one client."""
    idx = indices[client_id]
    return data.x_train[idx], data.y_train[idx]
