"""Server SGD with momentum: FedBuff's (and FedAvg's, FedAsync's) plain step."""

from __future__ import annotations

import torch

from .base import ServerOptimizer


class SGD(ServerOptimizer):
    """m ← β·m + d, x ← x + r·η·m (β = 0: x ← x + r·η·d).

    With η = 1 and β = 0 this is each strategy's rule as published: FedBuff's
    x + d, FedAvg's x + mean Δ, FedAsync's (1 − α_t)·x + α_t·x_new (computed
    with :func:`torch.lerp`, as before server optimizers existed, so results
    are bit for bit the same).

    Parameters
    ----------
    lr : float (default: 1.0)
        η.
    momentum : float (default: 0.0)
        β in [0, 1) (``strategy.server_momentum``).
    """

    name = "sgd"
    run_state_attributes = ("momentum_buffer",)

    def __init__(self, lr: float = 1.0, momentum: float = 0.0) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"server momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.momentum_buffer: torch.Tensor | None = None
        super().__init__(lr)

    def reset(self) -> None:
        """m = 0."""
        self.momentum_buffer = None

    def direction(self, pseudo_gradient: torch.Tensor) -> torch.Tensor:
        """m ← β·m + d and return m (d itself without momentum)."""
        if self.momentum <= 0:
            return pseudo_gradient
        if self.momentum_buffer is None:
            self.momentum_buffer = torch.zeros_like(pseudo_gradient)
        self.momentum_buffer = self.momentum * self.momentum_buffer + pseudo_gradient
        return self.momentum_buffer

    def mix(self, model: torch.Tensor, target: torch.Tensor, rate: float) -> torch.Tensor:
        """Without momentum, ``torch.lerp(x, x_new, r·η)``; else the generic step."""
        if self.momentum <= 0:
            return torch.lerp(model, target, rate * self.lr)
        return super().mix(model, target, rate)

    def describe(self) -> str:
        """The rule with its parameters, for logs."""
        return f"sgd (η={self.lr:g}, momentum={self.momentum:g})"
