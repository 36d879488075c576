"""Synchronous FedAvg (McMahan et al., 2017) on fedstale's event loop."""

from __future__ import annotations

from typing import Any

import torch

from .base import AsyncStrategy
from .task import ClientUpdate


class FedAvg(AsyncStrategy):
    """Federated Averaging with a barrier of ``concurrency`` clients per round.

    Each round samples C clients, waits for all of them on the same clock and
    delays as the asynchronous strategies, and replaces the model by the
    average of the client models weighted by their number of examples:

        x ← Σ_i n_i x_i / Σ_i n_i

    This is the same rule as Flower's ``FedAvg`` (its ``aggregate_train``),
    run on fedstale's loop so that comparisons with FedAsync and FedBuff use
    the same clients, delays and virtual clock.
    """

    supported_modes = ("sync",)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "sync")
        super().__init__(**kwargs)

    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """Return the example-weighted average of the client models."""
        sizes = torch.tensor([u.num_examples for u in updates], dtype=torch.float64)
        weights = sizes / sizes.sum()
        for update, weight in zip(updates, weights):
            update.weight = float(weight)
        stacked = torch.stack([u.params for u in updates])
        return weights.to(stacked.dtype) @ stacked
