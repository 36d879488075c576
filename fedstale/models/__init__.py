"""Networks, keyed by the name used in YAML (``model.name``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..data.spec import DatasetSpec
from .cnn import SmallCNN, build_cnn
from .lora import AdapterClassifier, build_bert_lora
from .mlp import MLP, build_mlp
from .resnet import CifarResNet, build_resnet8, build_resnet18, build_resnet20
from .squeezenet import build_squeezenet

MODELS: dict[str, Callable[[DatasetSpec], nn.Module]] = {
    "cnn": build_cnn,
    "mlp": build_mlp,
    "resnet8": build_resnet8,
    "resnet20": build_resnet20,
    "resnet18": build_resnet18,
    "squeezenet": build_squeezenet,
    "bert_lora": build_bert_lora,
}
"""Registry keyed by ``model.name``: ``builder(dataset_spec) -> nn.Module``."""


def build_model(name: str, spec: DatasetSpec, seed: int = 0) -> nn.Module:
    """Build model ``name`` for ``spec`` with weights initialised from ``seed``."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; accepted: {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](spec)


__all__ = [
    "AdapterClassifier",
    "build_bert_lora",
    "MLP",
    "MODELS",
    "CifarResNet",
    "SmallCNN",
    "build_cnn",
    "build_mlp",
    "build_model",
    "build_resnet8",
    "build_resnet18",
    "build_resnet20",
    "build_squeezenet",
]
