"""The server's view of the ``data`` section: partitioning, synthetic parameters, splits.

Re-exported by :mod:`fedstale.builders`, whose other builders use them.
"""

from __future__ import annotations

import numpy as np

from .config import Config, ConfigError
from .data import (
    SYNTHETIC_DATASETS,
    PartitionSpec,
    SplitData,
    SyntheticSpec,
    client_partitions,
    load_client_data,
    load_split,
)


def partition_spec(config: Config) -> PartitionSpec:
    """How the ``data`` section splits the pool (what every ClientApp computes too)."""
    d = config.data
    return PartitionSpec(
        partitioner=d.partitioner,
        num_partitions=d.num_clients,
        alpha=float(d.alpha),
        min_partition_size=int(d.min_partition_size),
        classes_per_client=int(d.classes_per_client),
        seed=d.seed,
        synthetic=synthetic_spec(config),
    )


def synthetic_spec(config: Config) -> SyntheticSpec | None:
    """The ``data.synthetic`` parameters when ``data.dataset`` is synthetic (else None)."""
    d = config.data
    if d.dataset not in SYNTHETIC_DATASETS:
        return None
    s = d.synthetic
    return SyntheticSpec(
        alpha=s.alpha, beta=s.beta, iid=d.dataset == "synthetic_iid", samples_mu=s.samples_mu,
        samples_sigma=s.samples_sigma, min_samples=s.min_samples, max_samples=s.max_samples,
        test_clients=s.test_clients, num_clients=d.num_clients,
    )


def data_split(config: Config, validation: bool = False) -> SplitData:
    """The server's :func:`~fedstale.data.load_split` of the ``data`` section
    (with the validation set when ``validation``)."""
    d = config.data
    val = d.server_val_size if validation else 0
    return load_split(d.dataset, d.test_fraction, d.seed, val, d.path, synthetic_spec(config))


def check_data(config: Config) -> None:
    """Load the dataset and split it as the clients will, before any run starts.

    The split is deterministic, so a partitioning that cannot be done (more
    clients than examples, an unreachable Dirichlet minimum size, a client
    with no example) would fail on every client at its first task; here it
    stops the run at once with one error naming the fields to change.

    Raises
    ------
    ConfigError
        If the dataset cannot be loaded, the pool cannot be partitioned, or
        (``evaluation.fairness``) a client has fewer than 2 examples.

    A synthetic dataset is not partitioned (each client generates its data):
    only client 0's data and the server's test set are generated.
    """
    d = config.data
    try:
        if d.dataset in SYNTHETIC_DATASETS:
            data_split(config, validation=True)
            load_client_data(d.dataset, d.test_fraction, partition_spec(config), 0)
            return  # evaluation.fairness: data.synthetic.min_samples >= 2 is a config rule
        parts = client_partitions(d.dataset, d.test_fraction, partition_spec(config), d.server_val_size, d.path)
    except ValueError as err:
        raise ConfigError([str(err)]) from err
    if config.evaluation.fairness:
        # each client trains on one part and is measured on the other (fairness.held_out_split)
        small = [client for client, indices in enumerate(parts) if len(indices) < 2]
        if small:
            listed = ", ".join(str(c) for c in small[:10]) + (", ..." if len(small) > 10 else "")
            raise ConfigError([
                f"evaluation.fairness: {len(small)} of data.num_clients ({d.num_clients}) clients have "
                f"fewer than 2 examples (clients {listed}), so none can be held out; raise "
                "data.min_partition_size to at least 2, lower data.num_clients, or turn evaluation.fairness off"
            ])


def client_held_out_sets(config: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every client's held-out (x, y) split (``evaluation.held_out``), by client id."""
    d, spec = config.data, partition_spec(config)
    return [
        load_client_data(
            d.dataset, d.test_fraction, spec, cid, d.server_val_size, d.path,
            config.evaluation.held_out, "held",
        )
        for cid in range(d.num_clients)
    ]
