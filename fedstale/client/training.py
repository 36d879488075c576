"""Local training and evaluation loops (plain PyTorch).

GPU-ready: the device is chosen once per process (:func:`pick_device`),
host tensors are copied with ``non_blocking=True`` (asynchronous when they
are pinned, see :func:`pin_host_memory`), and a local update can run under
mixed precision (:func:`precision_for`). The decisions are small pure
functions so that they are tested on machines without CUDA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ..progress import log_line
from .functional_sgd import FunctionalSGD

MIXED_PRECISION = ("none", "bf16", "fp16")
"""Accepted ``mixed-precision`` values (``client.mixed_precision``)."""

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

Array = np.ndarray | torch.Tensor
"""Training data: a numpy array or a CPU tensor (e.g. a cached, pinned one)."""


@lru_cache(maxsize=1)
def pick_device() -> torch.device:
    """CUDA when present, else CPU; decided once per process.

    The answer is cached: every client a ClientApp process hosts, and the
    ServerApp's evaluation, use the same device without asking CUDA again.
    Which GPU is ``cuda`` is torch's current device, i.e. what the process
    sees through ``CUDA_VISIBLE_DEVICES`` (Flower's simulation engine sets
    it from ``client-resources-num-gpus``).
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pin_host_memory(device: torch.device) -> bool:
    """Whether host tensors bound for ``device`` should be pinned (page-locked).

    Only for CUDA: a pinned source lets ``.to(device, non_blocking=True)``
    copy asynchronously by DMA. For a CPU device pinning gains nothing (and
    needs a CUDA driver).
    """
    return device.type == "cuda"


@dataclass(frozen=True)
class Precision:
    """How a local update computes: autocast dtype and loss scaling.

    Attributes
    ----------
    device_type : str
        ``cuda`` or ``cpu``, the autocast device type.
    dtype : torch.dtype | None
        The autocast dtype (``torch.bfloat16`` or ``torch.float16``); None
        for plain float32 (autocast off).
    grad_scaler : bool
        Whether a ``torch.amp.GradScaler`` scales the loss: only float16,
        whose 5-bit exponent underflows small gradients; bfloat16 has
        float32's exponent range and needs none.
    fallback : str
        Why a requested mixed precision runs in float32 on this device
        (empty when it runs as requested).
    """

    device_type: str
    dtype: torch.dtype | None = None
    grad_scaler: bool = False
    fallback: str = ""

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's context: ``torch.autocast`` or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A fresh GradScaler; a disabled one (plain backward/step) without fp16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.grad_scaler)


FP16_ON_CPU = (
    "client.mixed_precision fp16 on a CPU client: float16 convolutions ran 60-90x "
    "slower than float32 on a Xeon CPU (cnn: 45 s instead of 0.5-0.8 s per update), so this "
    "client trains in float32; use bf16 for mixed precision on CPUs"
)
BF16_UNSUPPORTED = (
    "client.mixed_precision bf16 on a GPU without native bfloat16 (before Ampere): "
    "this client trains in float32; use fp16 on such GPUs"
)


def precision_for(
    mode: str, device: torch.device, bf16_supported: bool | None = None
) -> Precision:
    """The :class:`Precision` of ``mixed-precision`` ``mode`` on ``device``.

    - ``none``: float32, no autocast, no scaler;
    - ``bf16``: autocast to bfloat16, no scaler, on CPU and on GPUs with
      native bfloat16 (Ampere or later); other GPUs train in float32;
    - ``fp16``: on CUDA, autocast to float16 with a GradScaler; on CPU,
      float32 (see :data:`FP16_ON_CPU`).

    A fallback keeps a heterogeneous population training: a config asks for
    the precision GPU clients should use, and a client whose device has no
    fast kernels for it trains in float32 (``Precision.fallback`` says why)
    instead of failing or crawling.

    Parameters
    ----------
    mode : str
        One of :data:`MIXED_PRECISION`.
    device : torch.device
        Where the update runs.
    bf16_supported : bool | None (default: None)
        Whether a CUDA device has native bfloat16; None asks
        ``torch.cuda.is_bf16_supported(including_emulation=False)`` (only
        for a CUDA device).

    Raises
    ------
    ValueError
        Naming ``mixed-precision`` for an unknown mode.
    """
    if mode not in MIXED_PRECISION:
        raise ValueError(
            f"mixed-precision '{mode}': accepted {', '.join(MIXED_PRECISION)} "
            "(client.mixed_precision)"
        )
    if mode == "none":
        return Precision(device.type)
    if mode == "fp16" and device.type != "cuda":
        return Precision(device.type, fallback=FP16_ON_CPU)
    if mode == "bf16" and device.type == "cuda":
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported(including_emulation=False)
        if not bf16_supported:
            return Precision(device.type, fallback=BF16_UNSUPPORTED)
    return Precision(device.type, _AUTOCAST_DTYPES[mode], grad_scaler=mode == "fp16")


@lru_cache(maxsize=None)
def warn_fallback(reason: str) -> None:
    """Log a precision fallback once per process (Flower's logger, ``[LOG]`` line)."""
    log_line(reason, warning=True)


def as_tensor(a: Array) -> torch.Tensor:
    """``a`` as a tensor, sharing memory (no copy for numpy or tensors)."""
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(a)


def to_device(a: Array, device: torch.device) -> torch.Tensor:
    """``a`` on ``device``; asynchronous from pinned memory to CUDA (``non_blocking``).

    Safe without a synchronisation: the copy is queued on the current CUDA
    stream, ahead of the kernels that read it, and the cached host tensors
    it reads are never written.
    """
    return as_tensor(a).to(device, non_blocking=True)


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
    mixed_precision: str = "none"
    """One of :data:`MIXED_PRECISION` (see :func:`precision_for`)."""


@dataclass(frozen=True)
class TrainResult:
    """What a local update reports."""

    epochs_run: int
    train_loss: float
    """Mean loss of the last epoch run."""


def make_optimizer(
    model: nn.Module, settings: TrainSettings, torch_optimizer: bool = False
) -> torch.optim.Optimizer | FunctionalSGD:
    """A fresh optimizer over the trainable parameters (frozen ones, e.g. a
    LoRA base, are left out).

    SGD is :class:`~fedstale.client.functional_sgd.FunctionalSGD`, the same
    update as ``torch.optim.SGD`` bit for bit without importing
    ``torch._dynamo`` (~1.5 s of every training process), unless
    ``torch_optimizer``: Opacus and an enabled GradScaler need a
    ``torch.optim.Optimizer``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer != "sgd":
        raise ValueError(f"optimizer '{settings.optimizer}': accepted sgd, adamw")
    sgd = torch.optim.SGD if torch_optimizer else FunctionalSGD
    return sgd(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def train(  # pylint: disable=too-many-arguments,too-many-positional-arguments,too-many-locals
    model: nn.Module,
    x: Array,
    y: Array,
    settings: TrainSettings,
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> TrainResult:
    """SGD over (x, y) for ``settings.epochs`` epochs, with early stopping.

    Mini-batch order (and ``augment``'s draws, applied to each batch) come
    from a generator seeded with ``settings.seed``, so the same seed and data
    give the same model. The forward pass and loss run under
    ``settings.mixed_precision`` (:func:`precision_for`, which may fall
    back to float32 on a device without fast kernels for it); parameters,
    gradients and optimizer state stay float32, so the trained model is
    float32 whatever the precision.
    """
    model.to(device).train()
    precision = precision_for(settings.mixed_precision, device)
    optimizer = make_optimizer(model, settings, torch_optimizer=precision.grad_scaler)
    if precision.fallback:
        warn_fallback(precision.fallback)
    scaler = precision.scaler()
    generator = torch.Generator().manual_seed(settings.seed)
    inputs = to_device(x, device)
    targets = to_device(y, device)
    loss_fn = nn.CrossEntropyLoss()
    best, since_best, epoch_loss, epochs_run = float("inf"), 0, float("nan"), 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(inputs), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            batch_inputs = inputs[batch] if augment is None else augment(inputs[batch], generator)
            with precision.autocast():
                loss = loss_fn(model(batch_inputs), targets[batch])
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
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
    x: Array,
    y: Array,
    device: torch.device,
    batch_size: int = 512,
) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy) of ``model`` on (x, y).

    Always float32 (no autocast), so accuracies compare across runs whatever
    ``client.mixed_precision`` the training used.
    """
    model.to(device).eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    x, y = as_tensor(x), as_tensor(y)
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        inputs = to_device(x[start : start + batch_size], device)
        targets = to_device(y[start : start + batch_size], device)
        logits = model(inputs)
        total_loss += float(loss_fn(logits, targets))
        correct += int((logits.argmax(dim=1) == targets).sum())
    count = max(len(x), 1)
    return total_loss / count, correct / count
