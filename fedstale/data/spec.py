"""What a dataset gives fedstale: arrays and their shape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DatasetSpec:
    """Input shape (C, H, W) and number of classes of a dataset."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class SplitData:
    """A dataset split into the clients' pool (train), the server's test set
    and, optionally, a small server validation set taken from the pool."""

    spec: DatasetSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
