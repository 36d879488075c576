"""Local training and evaluation loops (plain PyTorch)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class TrainSettings:
    """One local update's hyperparameters (from the TRAIN message's config)."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    """``sgd`` (with ``momentum``) or ``adamw`` (``momentum`` unused)."""
    patience: int = 0
    """Stop after this many epochs without a lower epoch loss (0 = never)."""
    seed: int = 0


@dataclass(frozen=True)
class TrainResult:
    """What a local update reports."""

    epochs_run: int
    train_loss: float
    """Mean loss of the last epoch run."""


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """A fresh optimizer over the trainable parameters (frozen ones, e.g. a
    LoRA base, are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer != "sgd":
        raise ValueError(f"optimizer '{settings.optimizer}': accepted sgd, adamw")
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    settings: TrainSettings,
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> TrainResult:
    """SGD over (x, y) for ``settings.epochs`` epochs, with early stopping.

    Mini-batch order (and ``augment``'s draws, applied to each batch) come
    from a generator seeded with ``settings.seed``, so the same seed and data
    give the same model.
    """
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    inputs = torch.from_numpy(x).to(device)
    targets = torch.from_numpy(y).to(device)
    loss_fn = nn.CrossEntropyLoss()
    best, since_best, epoch_loss, epochs_run = float("inf"), 0, float("nan"), 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(inputs), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            batch_inputs = inputs[batch] if augment is None else augment(inputs[batch], generator)
            loss = loss_fn(model(batch_inputs), targets[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        epochs_run += 1
        epoch_loss = total / max(len(order), 1)
        if epoch_loss < best - 1e-4:
            best, since_best = epoch_loss, 0
        else:
            since_best += 1
        if settings.patience > 0 and since_best >= settings.patience:
            break
    return TrainResult(epochs_run=epochs_run, train_loss=epoch_loss)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    device: torch.device,
    batch_size: int = 512,
) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy) of ``model`` on (x, y)."""
    model.to(device).eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        inputs = torch.from_numpy(x[start : start + batch_size]).to(device)
        targets = torch.from_numpy(y[start : start + batch_size]).to(device)
        logits = model(inputs)
        total_loss += float(loss_fn(logits, targets))
        correct += int((logits.argmax(dim=1) == targets).sum())
    count = max(len(x), 1)
    return total_loss / count, correct / count
