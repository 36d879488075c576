"""A small CNN for small grayscale images (digits 8×8, MNIST 28×28)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.spec import DatasetSpec


class SmallCNN(nn.Module):
    """conv3×3(16) → ReLU → conv3×3(32) → ReLU → maxpool 2 → FC 64 → FC classes.

    About 38K parameters on 8×8 digits; a local update on one client's
    ~70 digits takes a few milliseconds on one CPU thread.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 32 * (height // 2) * (width // 2)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.classifier(self.features(x))


def build_cnn(spec: DatasetSpec) -> nn.Module:
    """SmallCNN sized for ``spec``."""
    return SmallCNN(spec.input_shape, spec.num_classes)
