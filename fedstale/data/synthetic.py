"""FedProx's synthetic federated data: any number of clients, generated lazily.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020),
Section 5.1, ``synthetic(α, β)``. For client ``k``:

- ``u_k ~ N(0, α)`` and ``B_k ~ N(0, β)`` (α and β are variances, as the
  paper writes N(0, α); ``α = β = 0`` makes both 0);
- ``W_k ∈ R^{10×60}`` with entries ``~ N(u_k, 1)``, ``b_k ∈ R^{10}`` with
  entries ``~ N(u_k, 1)``: the client's model (α: how much models differ);
- ``v_k ∈ R^{60}`` with entries ``~ N(B_k, 1)``: the mean of its inputs
  (β: how much input distributions differ);
- ``x ~ N(v_k, Σ)``, Σ diagonal with ``Σ_jj = j^{-1.2}`` (j = 1..60);
- ``y = argmax(softmax(W_k x + b_k)) = argmax(W_k x + b_k)``.

``synthetic_iid`` (the paper's IID synthetic data): one ``W``, ``b`` with
entries ``~ N(0, 1)`` and ``v = 0`` shared by every client.

Each client's number of examples follows a power law, as in FedProx's
generator: ``n_k = min_samples + floor(L)``, ``L ~ LogNormal(μ, σ)``
(``samples_mu``, ``samples_sigma``), capped at ``max_samples``; before the
cap, ``E[n_k] = min_samples + exp(μ + σ²/2)`` (FedProx's μ = 4, σ = 2,
minimum 50: about 453).

**Lazy and reproducible.** Nothing is stored per client: client ``k``'s
draws come from ``numpy.random.SeedSequence(data.seed, spawn_key=(k, s))``,
stream ``s`` = 0 for ``n_k`` and its model (``u_k, B_k, W_k, b_k, v_k``, in
that order), 1 for its training examples, 2 for its examples in the
server's test set, 3 for those in the server's validation set. So client
``k``'s data depends on ``(data.seed, k)`` and the ``data.synthetic``
parameters only, never on the number of clients, and any population
(1,000,000 clients) costs nothing until a client is used. The IID model
comes from ``SeedSequence(data.seed)`` (no spawn key).

**The server's test set**: ``test_clients`` clients (a seeded sample of
``0 .. num_clients - 1`` without replacement, all of them when fewer), each
contributing ``ceil(test_fraction · n_k)`` fresh examples of its own
distribution (stream 2, not in its training data); at most
``test_clients · ceil(test_fraction · max_samples)`` examples. The
validation set (``data.server_val_size``) is drawn the same way from the
same clients (stream 3), split evenly among them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import DatasetSpec, SplitData

SYNTHETIC_DATASETS = ("synthetic", "synthetic_iid")
"""The ``data.dataset`` names generated here."""

DIMENSION = 60
NUM_CLASSES = 10
COVARIANCE = np.arange(1, DIMENSION + 1, dtype=np.float64) ** -1.2
"""The diagonal of Σ: ``Σ_jj = j^{-1.2}``, j = 1..60."""

MODEL_STREAM, TRAIN_STREAM, TEST_STREAM, VAL_STREAM = 0, 1, 2, 3
_TEST_SAMPLE_KEY = (2**32 - 1,)
"""Spawn key of the generator that picks the test clients (no client id reaches it)."""


@dataclass(frozen=True)
class SyntheticSpec:
    """The ``data.synthetic`` parameters (see the module docstring).

    Parameters
    ----------
    alpha, beta : float
        Variances of ``u_k`` (model heterogeneity) and ``B_k`` (input heterogeneity).
    iid : bool
        ``synthetic_iid``: one model and input mean for all clients.
    samples_mu, samples_sigma : float
        Log-mean and log-standard deviation of the lognormal part of ``n_k``.
    min_samples, max_samples : int
        Added to every ``n_k``; the cap of ``n_k``.
    test_clients : int
        Clients whose fresh examples make the server's test set.
    num_clients : int
        The population the test clients are sampled from (``data.num_clients``).
    """

    alpha: float = 0.0
    beta: float = 0.0
    iid: bool = False
    samples_mu: float = 4.0
    samples_sigma: float = 2.0
    min_samples: int = 50
    max_samples: int = 1000
    test_clients: int = 100
    num_clients: int = 1


@dataclass(frozen=True)
class ClientModel:
    """Client ``k``'s distribution: its size and the draws that define its data."""

    num_examples: int
    u: float
    b_mean: float
    weights: np.ndarray  # W_k, (10, 60)
    bias: np.ndarray  # b_k, (10,)
    mean: np.ndarray  # v_k, (60,)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def client_model(spec: SyntheticSpec, seed: int, client_id: int) -> ClientModel:
    """Draw client ``client_id``'s ``n_k, u_k, B_k, W_k, b_k, v_k`` (stream 0)."""
    rng = _rng(seed, client_id, MODEL_STREAM)
    tail = math.floor(rng.lognormal(spec.samples_mu, spec.samples_sigma))
    count = min(spec.min_samples + tail, spec.max_samples)
    if spec.iid:
        shared = np.random.default_rng(np.random.SeedSequence(seed))
        weights = shared.standard_normal((NUM_CLASSES, DIMENSION))
        bias = shared.standard_normal(NUM_CLASSES)
        return ClientModel(count, 0.0, 0.0, weights, bias, np.zeros(DIMENSION))
    u = rng.normal(0.0, math.sqrt(spec.alpha))
    b_mean = rng.normal(0.0, math.sqrt(spec.beta))
    weights = rng.normal(u, 1.0, (NUM_CLASSES, DIMENSION))
    bias = rng.normal(u, 1.0, NUM_CLASSES)
    mean = rng.normal(b_mean, 1.0, DIMENSION)
    return ClientModel(count, u, b_mean, weights, bias, mean)


def draw_examples(
    model: ClientModel, count: int, seed: int, client_id: int, stream: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` examples ``x ~ N(v_k, Σ)``, ``y = argmax(W_k x + b_k)`` from ``stream``.

    Returns float32 ``x`` of shape (count, 60) and int64 ``y``; the labels
    are computed in float64 before ``x`` is cast.
    """
    rng = _rng(seed, client_id, stream)
    x = model.mean + rng.standard_normal((count, DIMENSION)) * np.sqrt(COVARIANCE)
    y = np.argmax(x @ model.weights.T + model.bias, axis=1).astype(np.int64)
    return x.astype(np.float32), y


def client_data(spec: SyntheticSpec, seed: int, client_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Client ``client_id``'s ``n_k`` training examples (generated on each call)."""
    model = client_model(spec, seed, client_id)
    return draw_examples(model, model.num_examples, seed, client_id, TRAIN_STREAM)


def server_clients(spec: SyntheticSpec, seed: int) -> np.ndarray:
    """The sorted ids of the clients whose fresh examples make the server's sets."""
    if spec.test_clients >= spec.num_clients:
        return np.arange(spec.num_clients)
    chosen = _rng(seed, *_TEST_SAMPLE_KEY).choice(spec.num_clients, spec.test_clients, replace=False)
    return np.sort(chosen)


def synthetic_split(
    spec: SyntheticSpec, test_fraction: float, seed: int, server_val_size: int = 0
) -> SplitData:
    """The server's side of a synthetic dataset: its spec, test set and validation set.

    The clients' pool (``x_train``) is empty: every client generates its own
    examples (:func:`client_data`).
    """
    ids = server_clients(spec, seed)
    x_test, y_test, x_val, y_val = [], [], [], []
    per_client = math.ceil(server_val_size / len(ids)) if server_val_size else 0
    for k in ids.tolist():
        model = client_model(spec, seed, k)
        x, y = draw_examples(model, math.ceil(test_fraction * model.num_examples), seed, k, TEST_STREAM)
        x_test.append(x)
        y_test.append(y)
        if per_client:
            x, y = draw_examples(model, per_client, seed, k, VAL_STREAM)
            x_val.append(x)
            y_val.append(y)
    name = "synthetic_iid" if spec.iid else "synthetic"
    empty_x = np.zeros((0, DIMENSION), np.float32)
    return SplitData(
        spec=DatasetSpec(name=name, input_shape=(DIMENSION,), num_classes=NUM_CLASSES),
        x_train=empty_x,
        y_train=np.zeros(0, np.int64),
        x_test=np.concatenate(x_test),
        y_test=np.concatenate(y_test),
        x_val=np.concatenate(x_val)[:server_val_size] if per_client else None,
        y_val=np.concatenate(y_val)[:server_val_size] if per_client else None,
    )


_DIRECTIVES = ("alpha", "beta", "samples_mu", "samples_sigma", "min_samples", "max_samples", "test_clients")


def synthetic_directives(spec: SyntheticSpec) -> dict[str, float | int]:
    """The ``synthetic-*`` keys of a TRAIN config that carry ``spec`` to the clients."""
    return {f"synthetic-{name.replace('_', '-')}": getattr(spec, name) for name in _DIRECTIVES}


def spec_from_directives(config: Mapping[str, Any], name: str, num_clients: int) -> SyntheticSpec:
    """The :class:`SyntheticSpec` a message config carries (defaults for missing keys)."""
    default = SyntheticSpec()
    values = {
        key: type(getattr(default, key))(config.get(f"synthetic-{key.replace('_', '-')}", getattr(default, key)))
        for key in _DIRECTIVES
    }
    return SyntheticSpec(**values, iid=name == "synthetic_iid", num_clients=num_clients)
