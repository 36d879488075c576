"""Networks, keyed by the name used in YAML (``model.name``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..data.spec import DatasetSpec
from .cnn import SmallCNN, build_cnn
from .logreg import LogisticRegression, build_logreg
from .lora import AdapterClassifier, build_bert_lora
from .mlp import MLP, build_mlp
from .resnet import CifarResNet, build_resnet8, build_resnet18, build_resnet20
from .squeezenet import build_squeezenet

MODELS: dict[str, Callable[[DatasetSpec], nn.Module]] = {
    "cnn": build_cnn,
    "mlp": build_mlp,
    "logreg": build_logreg,
    "resnet8": build_resnet8,
    "resnet20": build_resnet20,
    "resnet18": build_resnet18,
    "squeezenet": build_squeezenet,
    "bert_lora": build_bert_lora,
}
"""Registry keyed by ``model.name``: ``builder(dataset_spec) -> nn.Module``."""


def build_model(name: str, spec: DatasetSpec, seed: int = 0, private: bool = False) -> nn.Module:
    """Build model ``name`` for ``spec`` with weights initialised from ``seed``.

    ``private`` (DP-SGD on, ``privacy.local.enabled``): the model passes
    through :func:`make_private_model`, so server and clients share the
    same GroupNorm layers and state_dict keys.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; accepted: {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name](spec)
    return make_private_model(model) if private else model


def make_private_model(model: nn.Module) -> nn.Module:
    """``model`` made trainable by Opacus: BatchNorm becomes GroupNorm.

    Opacus' ``ModuleValidator.fix`` replaces each BatchNorm with a
    GroupNorm of ``min(32, channels)`` groups (BatchNorm mixes examples of a
    batch, so per-example gradients and DP-SGD are undefined with it). A
    model without BatchNorm comes back unchanged. In-place activations
    (torchvision's ``ReLU(inplace=True)`` in resnet18 and squeezenet) are
    made out-of-place: in place, they modify the output of Opacus' backward
    hook and autograd refuses the backward pass. Neither change alters the
    state_dict keys of a model without BatchNorm.

    Raises
    ------
    ValueError
        When Opacus still rejects a layer of the fixed model.
    """
    try:
        from opacus.validators import ModuleValidator  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError(
            "privacy.local.enabled needs Opacus: pip install -e '.[privacy]'"
        ) from err

    fixed = ModuleValidator.fix(model)
    for module in fixed.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ValueError(f"model cannot be trained with DP-SGD (privacy.local): {errors[0]}")
    return fixed


__all__ = [
    "AdapterClassifier",
    "build_bert_lora",
    "build_logreg",
    "LogisticRegression",
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
    "make_private_model",
]
