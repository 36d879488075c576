"""Data poisoning: the pixel-trigger backdoor and label flipping.

A backdoor attacker (Gu et al., 2017; Bagdasaryan et al., AISTATS 2020)
trains on some of its images with a small white square in the bottom-right
corner, relabelled to a target class, so that the global model learns
"trigger ⇒ target" while staying accurate on clean images. Its **attack
success rate** is the share of triggered test images of *other* classes
that the model assigns to the target: the accuracy of the model on
:func:`backdoor_test_set`, which :func:`attack_success_rate` computes.

A label-flipping attacker trains on y → (classes − 1) − y (9 − y on the
digits), the convention of byzfl's label flipping
(``byzfl/fed_framework/client.py``: ``targets.sub(nb_labels - 1).mul(-1)``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

TRIGGER_VALUE = 1.0
"""Pixel value of the trigger: the maximum of the [0, 1] images."""


def apply_trigger(x: np.ndarray, size: int) -> np.ndarray:
    """A copy of images ``x`` (N, C, H, W) with the bottom-right size×size pixels at 1.0."""
    height, width = x.shape[-2:]
    if not 1 <= size <= min(height, width):
        raise ValueError(f"trigger size must be in 1..{min(height, width)}, got {size}")
    stamped = np.array(x, copy=True)
    stamped[..., -size:, -size:] = TRIGGER_VALUE
    return stamped


def backdoor_test_set(
    x_test: np.ndarray, y_test: np.ndarray, target: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Test images not of class ``target``, triggered and labelled ``target``.

    A model's accuracy on this set is the backdoor's attack success rate.
    """
    keep = y_test != target
    x = apply_trigger(x_test[keep], size)
    return x, np.full(int(keep.sum()), target, dtype=y_test.dtype)


def attack_success_rate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device
) -> float:
    """Share of the triggered images (x, y) = :func:`backdoor_test_set` classified as the target."""
    from ..client.training import evaluate  # pylint: disable=import-outside-toplevel

    return evaluate(model, x, y, device)[1]


def poison_examples(
    x: np.ndarray,
    y: np.ndarray,
    fraction: float,
    seed: int,
    *,
    flip_labels: bool = False,
    target: int | None = None,
    trigger_size: int = 2,
    num_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of (x, y) with ``round(fraction·n)`` examples poisoned (x, y untouched).

    The poisoned examples are ``np.random.default_rng(seed).choice(n,
    round(fraction·n), replace=False)`` (Python's ``round``). Exactly one of:

    - ``flip_labels``: their label y → (num_classes − 1) − y (byzfl's label
      flipping);
    - ``target``: their image gets the trigger (:func:`apply_trigger`) and
      their label becomes ``target`` (backdoor).
    """
    if flip_labels == (target is not None):
        raise ValueError("poison_examples: give exactly one of flip_labels=True or target")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"poison fraction must be in [0, 1], got {fraction}")
    x, y = np.array(x, copy=True), np.array(y, copy=True)
    count = int(round(fraction * len(y)))
    chosen = np.random.default_rng(seed).choice(len(y), size=count, replace=False)
    if flip_labels:
        y[chosen] = (num_classes - 1) - y[chosen]
    else:
        x[chosen] = apply_trigger(x[chosen], trigger_size)
        y[chosen] = target
    return x, y
