"""Server Yogi (FedYogi, Reddi et al., ICLR 2021)."""

from __future__ import annotations

import torch

from .base import AdaptiveOptimizer


class Yogi(AdaptiveOptimizer):
    """v ← v − (1 − β2)·d²·sign(v − d²); no bias correction.

    v grows as Adam's does but shrinks only additively, so a burst of large
    pseudo-gradients does not collapse the step for long (Zaheer et al.,
    2018). This is Flower's ``FedYogi`` (defaults there: η = 0.01, β1 = 0.9,
    β2 = 0.99, τ = 1e-3). Parameters as
    :class:`~fedstale.aggregation.optimizers.base.AdaptiveOptimizer`.
    """

    name = "yogi"

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        """v − (1 − β2)·d²·sign(v − d²)."""
        return v - (1.0 - self.beta_2) * squared * torch.sign(v - squared)
