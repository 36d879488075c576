"""Multinomial logistic regression on flat features (FedProx's model on synthetic data)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.spec import DatasetSpec


class LogisticRegression(nn.Module):
    """flatten → one linear layer → class logits (610 parameters on synthetic: 60·10 + 10).

    Trained with cross-entropy, this is multinomial logistic regression,
    ``softmax(W x + b)``, the model FedProx fits on ``synthetic(α, β)``.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.net(x)


def build_logreg(spec: DatasetSpec) -> nn.Module:
    """Logistic regression sized for ``spec``."""
    return LogisticRegression(spec.input_shape, spec.num_classes)
