"""Server Adam (FedAdam, Reddi et al., ICLR 2021)."""

from __future__ import annotations

import math

import torch

from .base import AdaptiveOptimizer


class Adam(AdaptiveOptimizer):
    """v ← β2·v + (1 − β2)·d², with Adam's bias correction.

    The step is x ← x + r·η·c_t·m/(√v + τ) with
    c_t = √(1 − β2^(t+1)) / (1 − β1^(t+1)), t = 1, 2, ... the step. This is
    Flower's ``FedAdam`` exactly (its ``eta_norm``, with its server round
    for t); Kingma & Ba's correction has t where Flower has t + 1.
    Parameters as :class:`~fedstale.aggregation.optimizers.base.AdaptiveOptimizer`
    (Flower's defaults: η = 0.1, β1 = 0.9, β2 = 0.99, τ = 1e-3).
    """

    name = "adam"

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        """β2·v + (1 − β2)·d²."""
        return self.beta_2 * v + (1 - self.beta_2) * squared

    def bias_correction(self) -> float:
        """√(1 − β2^(t+1)) / (1 − β1^(t+1))."""
        exponent = self.steps + 1.0
        return math.sqrt(1 - self.beta_2**exponent) / (1 - self.beta_1**exponent)
