"""The ``data`` section of the schema and its ``data.synthetic`` subsection."""

from __future__ import annotations

from dataclasses import dataclass

from .base import _f, _section


def _dataset_names() -> list[str]:
    from ..data import dataset_names  # pylint: disable=import-outside-toplevel

    return dataset_names()


@dataclass
class SyntheticConfig:
    """``data.synthetic``: FedProx's synthetic(α, β) (``data.dataset`` synthetic or synthetic_iid)."""

    alpha: float = _f(0.0, "α, variance of u_k, the mean of client k's model W_k, b_k (model heterogeneity; FedProx: 0, 0.5, 1)", ge=0)
    beta: float = _f(0.0, "β, variance of B_k, the mean of client k's input mean v_k (input heterogeneity; FedProx: 0, 0.5, 1)", ge=0)
    samples_mu: float = _f(4.0, "μ of the lognormal part of a client's example count n_k = min_samples + ⌊LogNormal(μ, σ)⌋ (mean before the cap: min_samples + exp(μ + σ²/2))")
    samples_sigma: float = _f(2.0, "σ of that lognormal (0: every client has min_samples + ⌊exp(μ)⌋ examples)", ge=0)
    min_samples: int = _f(50, "examples every client has at least", ge=1)
    max_samples: int = _f(1000, "cap of a client's example count", ge=1)
    test_clients: int = _f(100, "clients (a seeded sample) whose fresh examples, ceil(test_fraction · n_k) each, make the server's test set", ge=1)


@dataclass
class DataConfig:
    """``data``: dataset and how it is split among clients."""

    dataset: str = _f("digits", "dataset name", choices=_dataset_names)
    path: str = _f(
        "", "local copy of the dataset: a datasets.save_to_disk folder, parquet files or a torchvision root (empty: digits from scikit-learn, others from the Hugging Face hub/cache)"
    )
    augment: bool = _f(True, "apply the dataset's training augmentation (cifar: random crop + flip)")
    num_clients: int = _f(20, "number of clients (the simulated population)", ge=1)
    partitioner: str = _f(
        "dirichlet", "flwr-datasets partitioner (not for synthetic datasets, which generate each client's data)", choices=("iid", "dirichlet", "pathological")
    )
    alpha: float = _f(0.5, "Dirichlet concentration α (dirichlet)", gt=0)
    min_partition_size: int = _f(10, "fewest examples per client (dirichlet)", ge=0)
    classes_per_client: int = _f(2, "labels per client (pathological)", ge=1)
    test_fraction: float = _f(0.2, "share held out as the server's test set", gt=0, lt=1)
    server_val_size: int = _f(0, "examples of the clients' pool kept by the server for validation", ge=0)
    seed: int = _f(0, "seed of the train/test split and of the partitioning (synthetic: of every client's data)", ge=0)
    synthetic: SyntheticConfig = _section(SyntheticConfig)
