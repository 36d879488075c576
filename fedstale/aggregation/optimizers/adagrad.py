"""Server Adagrad (FedAdagrad, Reddi et al., ICLR 2021)."""

from __future__ import annotations

import torch

from .base import AdaptiveOptimizer


class Adagrad(AdaptiveOptimizer):
    """v ← v + d²; no bias correction; β2 is not used.

    Flower's ``FedAdagrad`` fixes β1 = 0 (m = d); here β1 is
    ``beta_1`` like the other adaptive optimizers (set it to 0 for Flower's
    rule; defaults there: η = 0.1, τ = 1e-3). Parameters as
    :class:`~fedstale.aggregation.optimizers.base.AdaptiveOptimizer`.
    """

    name = "adagrad"

    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        """v + d²."""
        return v + squared
