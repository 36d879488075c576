"""fedstale's NumPyClient: a PyTorch model on one client's data partition.

Everything a client needs (dataset, partitioning, model, hyperparameters)
arrives in the message's config, so the same ClientApp serves any experiment
the server runs. Data and the model skeleton are cached per process, so a
worker that hosts many virtual clients loads the dataset once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import Context, RecordDict
from flwr.client import NumPyClient

from ..data import (
    IMAGE_DATASETS,
    SYNTHETIC_DATASETS,
    DatasetSpec,
    PartitionSpec,
    SplitData,
    load_client_data,
    load_split,
    spec_from_directives,
    synthetic_train_size,
)
from ..data.synthetic import SyntheticSpec, synthetic_split
from ..data.augment import AUGMENTATIONS
from ..data.backdoor import poison_examples
from ..models import build_model
from .training import TrainSettings, evaluate, pick_device, pin_host_memory, train

_THREADS_SET: list[int] = []


def set_torch_threads(num_threads: int) -> None:
    """Pin torch's intra-op threads once per process (0 leaves torch's default).

    On small CPU machines several ClientApps share the cores; one thread each
    is both faster and steadier than torch's default.
    """
    if num_threads > 0 and _THREADS_SET != [num_threads]:
        torch.set_num_threads(num_threads)
        _THREADS_SET[:] = [num_threads]


def partition_spec_from(config: Mapping[str, Any], num_partitions: int) -> PartitionSpec:
    """The partitioning named in a message config.

    ``num_partitions`` is used when the config has no ``num-clients`` (a
    server that is not fedstale's, e.g. Flower's own FedAvg). For a
    synthetic dataset it carries the ``synthetic-*`` parameters.
    """
    name = str(config.get("dataset", "digits"))
    num_clients = int(config.get("num-clients", num_partitions))
    synthetic = (
        spec_from_directives(config, name, num_clients) if name in SYNTHETIC_DATASETS else None
    )
    return PartitionSpec(
        partitioner=str(config.get("partitioner", "iid")),
        num_partitions=num_clients,
        alpha=float(config.get("dirichlet-alpha", 0.5)),
        min_partition_size=int(config.get("min-partition-size", 10)),
        classes_per_client=int(config.get("classes-per-client", 2)),
        seed=int(config.get("data-seed", 0)),
        synthetic=synthetic,
    )


def train_settings_from(config: Mapping[str, Any]) -> TrainSettings:
    """The local-training hyperparameters in a message config."""
    return TrainSettings(
        epochs=int(config.get("local-epochs", 1)),
        batch_size=int(config.get("batch-size", 16)),
        lr=float(config.get("lr", 0.05)),
        momentum=float(config.get("momentum", 0.0)),
        weight_decay=float(config.get("weight-decay", 0.0)),
        optimizer=str(config.get("optimizer", "sgd")),
        patience=int(config.get("patience", 0)),
        seed=int(config.get("seed", 0)),
        mixed_precision=str(config.get("mixed-precision", "none")),
    )


def split_from(config: Mapping[str, Any]) -> SplitData:
    """The dataset a message config names (cached per process by ``load_split``)."""
    name = str(config.get("dataset", "digits"))
    if name in SYNTHETIC_DATASETS:  # the spec only: no test set on the client side
        return _synthetic_shape(name)
    return load_split(
        name,
        float(config.get("test-fraction", 0.2)),
        int(config.get("data-seed", 0)),
        path=str(config.get("data-path", "")),
    )


@lru_cache(maxsize=2)
def _synthetic_shape(name: str) -> SplitData:
    return synthetic_split(SyntheticSpec(iid=name == "synthetic_iid", test_clients=1), 0.2, 0)


def partition_tensors(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    dataset: str,
    test_fraction: float,
    spec: PartitionSpec,
    client_id: int,
    server_val_size: int,
    path: str,
    pin: bool,
    held_out: float = 0.0,
    part: str = "train",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's (x, y) training tensors, from a per-process cache.

    Partitions of a dataset split are cached for up to 1,024 clients
    (:func:`_partition_tensors`); a synthetic client's generated examples
    for up to :data:`SYNTHETIC_CACHE` clients, since regenerating them is
    cheap and a population may have millions of clients.
    """
    cached = _synthetic_tensors if dataset in SYNTHETIC_DATASETS else _partition_tensors
    return cached(dataset, test_fraction, spec, client_id, server_val_size, path, pin, held_out, part)


SYNTHETIC_CACHE = 64
"""Synthetic clients whose tensors a ClientApp process keeps (least recently used go)."""


@lru_cache(maxsize=1024)
def _partition_tensors(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    dataset: str,
    test_fraction: float,
    spec: PartitionSpec,
    client_id: int,
    server_val_size: int,
    path: str,
    pin: bool,
    held_out: float = 0.0,
    part: str = "train",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's (x, y) training tensors, built once per process and partition.

    ``held_out`` and ``part``: see :func:`fedstale.data.load_client_data`
    (with a held-out split, ``train`` is what the client trains on).

    With ``pin`` (a CUDA device, :func:`~fedstale.client.training.pin_host_memory`)
    they are pinned once here, so every later update copies them to the GPU
    asynchronously. Partitions are disjoint, so for one dataset and
    partitioning the cache holds at most one extra copy of the training set
    per process (page-locked when pinned).
    """
    x, y = load_client_data(
        dataset, test_fraction, spec, client_id, server_val_size, path, held_out, part
    )
    tensors = torch.from_numpy(x), torch.from_numpy(y)
    if pin:
        tensors = tensors[0].pin_memory(), tensors[1].pin_memory()
    return tensors


_synthetic_tensors = lru_cache(maxsize=SYNTHETIC_CACHE)(_partition_tensors.__wrapped__)


def _clear_tensor_caches() -> None:
    _partition_tensors.cache_clear()
    _synthetic_tensors.cache_clear()


partition_tensors.cache_clear = _clear_tensor_caches  # type: ignore[attr-defined]


@lru_cache(maxsize=4)
def _model_skeleton(name: str, spec: DatasetSpec, private: bool = False) -> torch.nn.Module:
    return build_model(name, spec, private=private)


def augmentation_from(config: Mapping[str, Any]) -> Callable | None:
    """The dataset's training augmentation, unless ``augment`` is false."""
    name = str(config.get("dataset", "digits"))
    if not bool(config.get("augment", True)) or name not in IMAGE_DATASETS:
        return None
    return AUGMENTATIONS[IMAGE_DATASETS[name].augmentation]


class TorchClient(NumPyClient):
    """A client that trains a torch model on its partition.

    Parameters
    ----------
    client_id : int
        The partition this client holds (``partition-id`` of its context).
    num_partitions : int
        Number of partitions (``num-partitions`` of its context).
    state : RecordDict | None (default: None)
        The client's ``Context.state``; DP-SGD keeps its privacy accountant
        there between participations (None: nothing persists, and ε
        restarts at every update).
    """

    def __init__(
        self, client_id: int, num_partitions: int, state: RecordDict | None = None
    ) -> None:
        self.client_id = client_id
        self.num_partitions = num_partitions
        self.state = state
        self.device = pick_device()

    def _data(
        self, config: Mapping[str, Any], part: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This client's cached (x, y) tensors (pinned when training on CUDA).

        With ``held-out`` in ``config`` (``evaluation.fairness``), ``part``
        ``train`` leaves the client's held-out split out and ``held`` is only it.
        """
        return partition_tensors(
            str(config.get("dataset", "digits")),
            float(config.get("test-fraction", 0.2)),
            partition_spec_from(config, self.num_partitions),
            self.client_id,
            int(config.get("server-val-size", 0)),
            str(config.get("data-path", "")),
            pin_host_memory(self.device),
            float(config.get("held-out", 0.0)),
            part,
        )

    def _training_data(
        self, config: Mapping[str, Any]
    ) -> tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]:
        """The client's data, poisoned on a copy when an attack asked for it.

        :func:`fedstale.client.attacks.attack_mod` adds the directives
        (``poison-label-flip`` or ``poison-backdoor-*``); the poisoned
        examples are drawn with the message ``seed``. The cached tensors are
        never modified; a poisoned copy is a one-off, so it is not pinned.
        """
        x, y = self._data(config)
        if "poison-label-flip" not in config and "poison-backdoor-target" not in config:
            return x, y
        x, y = x.numpy(), y.numpy()
        seed = int(config.get("seed", 0))
        if "poison-label-flip" in config:
            num_classes = split_from(config).spec.num_classes
            return poison_examples(
                x, y, float(config["poison-label-flip"]), seed,
                flip_labels=True, num_classes=num_classes,
            )
        return poison_examples(
            x, y, float(config.get("poison-backdoor-fraction", 1.0)), seed,
            target=int(config["poison-backdoor-target"]),
            trigger_size=int(config.get("poison-backdoor-trigger-size", 2)),
        )

    def _model(self, config: Mapping[str, Any], parameters: list[np.ndarray]) -> torch.nn.Module:
        private = bool(config.get("dp-sgd", False))
        model = _model_skeleton(str(config.get("model", "cnn")), split_from(config).spec, private)
        keys = list(model.state_dict().keys())
        model.load_state_dict(
            {k: torch.from_numpy(np.copy(v)) for k, v in zip(keys, parameters)}, strict=True
        )
        return model

    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        """Report ``num-examples`` (loads the partition, warming the cache).

        A synthetic client only draws its example count: preparing a
        population of millions generates nobody's examples.
        """
        set_torch_threads(int(config.get("num-threads", 1)))
        name = str(config.get("dataset", "digits"))
        if name in SYNTHETIC_DATASETS:
            size = synthetic_train_size(
                name, partition_spec_from(config, self.num_partitions), self.client_id,
                float(config.get("held-out", 0.0)),
            )
            return {"num-examples": size, "device": str(self.device)}
        x, _ = self._data(config)
        return {"num-examples": len(x), "device": str(self.device)}

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train locally from ``parameters``; return the new parameters.

        With ``dp-sgd`` in ``config`` the update is DP-SGD
        (:func:`fedstale.client.privacy.train_dp`) and the metrics are
        ``dp-epsilon`` (this client's ε so far), ``dp-noise-multiplier``,
        ``dp-steps`` (its noisy steps so far) and ``epochs-run``; no
        ``train-loss``, which is computed on the private data without noise
        and would leak outside the (ε, δ) guarantee.
        """
        set_torch_threads(int(config.get("num-threads", 1)))
        if bool(config.get("dp-sgd", False)):
            return self._fit_private(parameters, config)
        x, y = self._training_data(config)
        model = self._model(config, parameters)
        result = train(
            model, x, y, train_settings_from(config), self.device, augmentation_from(config)
        )
        params = [v.detach().cpu().numpy() for v in model.state_dict().values()]
        return (
            params,
            len(x),
            {"train-loss": result.train_loss, "epochs-run": result.epochs_run},
        )

    def _fit_private(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """DP-SGD update; the accountant is restored from and saved to ``self.state``."""
        # pylint: disable=import-outside-toplevel  # Opacus only when DP-SGD is on
        from .privacy import AccountantState, DpSettings, train_dp

        dp = DpSettings.from_config(config)
        assert dp is not None
        x, y = self._training_data(config)
        model = self._model(config, parameters)
        state = AccountantState.load(self.state)
        result = train_dp(
            model, x, y, train_settings_from(config), dp, state, self.device,
            augmentation_from(config),
        )
        state.save(self.state)
        params = [v.detach().cpu().numpy() for v in model.state_dict().values()]
        return (
            params,
            len(x),
            {
                "epochs-run": result.train.epochs_run,
                "dp-epsilon": result.epsilon,
                "dp-noise-multiplier": result.noise_multiplier,
                "dp-steps": result.steps,
            },
        )

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        """Loss and accuracy of ``parameters`` on this client's partition (its held-out split with ``held-out``)."""
        set_torch_threads(int(config.get("num-threads", 1)))
        x, y = self._data(config, "held")
        loss, accuracy = evaluate(self._model(config, parameters), x, y, self.device)
        return loss, len(x), {"accuracy": accuracy}


def client_fn(context: Context) -> TorchClient:
    """Build the client of ``context.node_config['partition-id']`` (its state: ``context.state``)."""
    return TorchClient(
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
        context.state,
    )
