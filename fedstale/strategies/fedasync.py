"""FedAsync (Xie, Koyejo & Gupta, 2019): mix each update in as it arrives."""

from __future__ import annotations

from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from .base import AsyncStrategy
from .task import ClientUpdate


class FedAsync(AsyncStrategy):
    """Asynchronous federated optimisation.

    On each arriving client model x_new with staleness τ:

        x ← (1 − α_t)·x + α_t·x_new,   α_t = α·s(τ)

    Parameters
    ----------
    alpha : float (default: 0.6)
        Mixing hyperparameter α in (0, 1] (the paper uses 0.5 to 0.9).
    **kwargs
        Passed to :class:`~fedstale.strategies.base.AsyncStrategy`
        (``staleness`` is s(τ); FedAsync is asynchronous only).
    """

    supported_modes = ("async",)

    def __init__(self, *, alpha: float = 0.6, **kwargs: Any) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        super().__init__(**kwargs)
        self.alpha = alpha

    def summary(self) -> None:
        """Log the configuration."""
        log(INFO, "\t├──> Mixing: x <- (1 - α_t) x + α_t x_new, α = %g", self.alpha)
        super().summary()

    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """Mix each update into the model in turn."""
        for update in updates:
            alpha_t = self.alpha * self.staleness(update.staleness)
            update.weight = alpha_t
            model = torch.lerp(model, update.params, alpha_t)
        return model
