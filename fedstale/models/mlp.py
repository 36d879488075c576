"""A multilayer perceptron on flattened images (digits: 64-32-10)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.spec import DatasetSpec


class MLP(nn.Module):
    """flatten → FC hidden → ReLU → FC classes (2,410 parameters on digits)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.net(x)


def build_mlp(spec: DatasetSpec) -> nn.Module:
    """MLP sized for ``spec``."""
    return MLP(spec.input_shape, spec.num_classes)
