"""Datasets and partitioning, each keyed by the name used in YAML."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, replace
from functools import lru_cache

import numpy as np

from ..fairness import held_out_split
from .cache import cached_arrays, library_versions
from .digits import load_digits_split
from .images import IMAGE_DATASETS, load_image_split, register_torchvision_dataset
from .partition import PARTITIONERS, PartitionError, PartitionSpec, client_arrays, partition_indices
from .spec import DatasetSpec, SplitData
from .synthetic import (
    SYNTHETIC_DATASETS,
    SyntheticSpec,
    client_data,
    client_model,
    spec_from_directives,
    synthetic_directives,
    synthetic_split,
)
from .text import load_text_split


def _digits(test_fraction: float, seed: int, path: str) -> SplitData:
    if path:
        raise ValueError("data.path: digits ship with scikit-learn; leave data.path empty")
    return load_digits_split(test_fraction, seed)


def dataset_names() -> list[str]:
    """Every accepted ``data.dataset``: ``digits``, the image datasets
    (including those added with :func:`register_torchvision_dataset`) and
    ``text`` (:mod:`fedstale.data.text`) and FedProx's ``synthetic`` and
    ``synthetic_iid`` (:mod:`fedstale.data.synthetic`)."""
    return ["digits", *IMAGE_DATASETS, "text", *SYNTHETIC_DATASETS]


def synthetic_spec(name: str, synthetic: SyntheticSpec | None, num_clients: int = 1) -> SyntheticSpec:
    """``synthetic`` (default parameters when None) with ``iid`` as ``name`` says."""
    base = synthetic if synthetic is not None else SyntheticSpec(num_clients=num_clients)
    return replace(base, iid=name == "synthetic_iid")


@lru_cache(maxsize=4)
def load_split(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    name: str,
    test_fraction: float,
    seed: int,
    server_val_size: int = 0,
    path: str = "",
    synthetic: SyntheticSpec | None = None,
) -> SplitData:
    """Load dataset ``name`` split into the clients' pool and the test set.

    ``path`` is ``data.path`` (a local copy; see :mod:`fedstale.data.images`).
    With ``server_val_size`` > 0, that many examples of the pool (stratified
    when possible) become the server's validation set and leave the pool.
    ``synthetic``: the parameters of ``synthetic``/``synthetic_iid``, whose
    pool is empty (each client generates its data) and whose test and
    validation sets are drawn as :func:`fedstale.data.synthetic.synthetic_split` says.
    """
    if name not in dataset_names():
        raise ValueError(f"unknown dataset '{name}'; accepted: {', '.join(dataset_names())}")
    if name in SYNTHETIC_DATASETS:
        return synthetic_split(synthetic_spec(name, synthetic), test_fraction, seed, server_val_size)
    if name == "digits":
        data = _digits(test_fraction, seed, path)
    elif name == "text":
        data = load_text_split(path)
    else:
        data = load_image_split(name, path)
    if server_val_size <= 0:
        return data
    return _carve_validation(data, server_val_size, seed)


def _carve_validation(data: SplitData, size: int, seed: int) -> SplitData:
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    if size >= len(data.y_train):
        raise ValueError(
            f"data.server_val_size ({size}) must be smaller than the pool ({len(data.y_train)})"
        )
    stratify = data.y_train if size >= data.spec.num_classes else None
    x_pool, x_val, y_pool, y_val = train_test_split(
        data.x_train, data.y_train, test_size=size, random_state=seed, stratify=stratify
    )
    return replace(data, x_train=x_pool, y_train=y_pool, x_val=x_val, y_val=y_val)


@lru_cache(maxsize=4)
def _indices(
    name: str, test_fraction: float, spec: PartitionSpec, server_val_size: int, path: str = ""
) -> tuple[np.ndarray, ...]:
    data = load_split(name, test_fraction, spec.seed, server_val_size, path)
    labels = np.ascontiguousarray(data.y_train)
    key = {
        "labels": hashlib.sha256(labels.tobytes()).hexdigest(),
        "labels_dtype": str(labels.dtype),
        "spec": asdict(spec),
        **library_versions("flwr-datasets", "datasets", "numpy"),
    }

    def compute() -> dict[str, np.ndarray]:
        parts = partition_indices(labels, spec)
        return {"indices": np.concatenate(parts), "sizes": np.array([len(p) for p in parts], np.int64)}

    stored = cached_arrays("partition", key, compute)
    return tuple(np.split(stored["indices"].astype(np.int64, copy=False), np.cumsum(stored["sizes"])[:-1]))


def client_partitions(
    name: str, test_fraction: float, spec: PartitionSpec, server_val_size: int = 0, path: str = ""
) -> tuple[np.ndarray, ...]:
    """Every client's indices into the pool (computed once per process).

    Not for ``synthetic`` datasets, which have no pool (:func:`load_client_data`
    generates a client's data on demand).

    Raises
    ------
    PartitionError
        If the pool cannot be split as ``spec`` asks (see
        :func:`fedstale.data.partition.partition_indices`).
    """
    return _indices(name, test_fraction, spec, server_val_size, path)


def load_client_data(
    name: str,
    test_fraction: float,
    spec: PartitionSpec,
    client_id: int,
    server_val_size: int = 0,
    path: str = "",
    held_out: float = 0.0,
    part: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) arrays of client ``client_id`` (the partition is cached per process).

    With ``held_out`` > 0 (``evaluation.fairness``) the client's examples are
    split once by :func:`fedstale.fairness.held_out_split` (seeded by
    ``spec.seed``, i.e. ``data.seed``): ``part="train"`` gives the examples it
    trains on, ``part="held"`` the held-out ones its accuracy is measured on.
    With ``held_out`` 0 the whole partition, whatever ``part``.

    For ``synthetic`` datasets the client's examples are generated from
    ``(spec.seed, client_id)`` and ``spec.synthetic`` on each call
    (:func:`fedstale.data.synthetic.client_data`); nothing is partitioned.
    """
    if not 0 <= client_id < spec.num_partitions:
        raise ValueError(
            f"client-id {client_id} is outside 0..{spec.num_partitions - 1}"
        )
    if name in SYNTHETIC_DATASETS:
        x, y = client_data(synthetic_spec(name, spec.synthetic, spec.num_partitions), spec.seed, client_id)
    else:
        data = load_split(name, test_fraction, spec.seed, server_val_size, path)
        indices = _indices(name, test_fraction, spec, server_val_size, path)
        x, y = client_arrays(data, indices, client_id)
    if held_out <= 0:
        return x, y
    train, held = held_out_split(len(y), held_out, spec.seed, client_id)
    keep = held if part == "held" else train
    return x[keep], y[keep]


def synthetic_train_size(name: str, spec: PartitionSpec, client_id: int, held_out: float = 0.0) -> int:
    """``len(load_client_data(...)[1])`` of a synthetic client, without generating its examples.

    Only its stream-0 draws are made (its example count and model, a few
    hundred numbers), none of its examples, so a ClientApp that prepares a
    million clients spends microseconds on each.
    """
    synthetic = synthetic_spec(name, spec.synthetic, spec.num_partitions)
    count = client_model(synthetic, spec.seed, client_id).num_examples
    if held_out <= 0:
        return count
    return len(held_out_split(count, held_out, spec.seed, client_id)[0])


__all__ = [
    "IMAGE_DATASETS",
    "dataset_names",
    "register_torchvision_dataset",
    "PARTITIONERS",
    "PartitionError",
    "client_partitions",
    "DatasetSpec",
    "PartitionSpec",
    "SplitData",
    "SYNTHETIC_DATASETS",
    "SyntheticSpec",
    "synthetic_spec",
    "synthetic_train_size",
    "synthetic_directives",
    "spec_from_directives",
    "load_client_data",
    "load_split",
]
