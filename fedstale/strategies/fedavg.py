"""Synchronous FedAvg (McMahan et al., 2017) on fedstale's event loop."""

from __future__ import annotations

from typing import Any

import torch

from ..aggregation.optimizers import SGD, ServerOptimizer
from ..aggregation.reducers import Reducer, WeightedMean
from ..component_state import capture, restore
from .base import AsyncStrategy
from .task import ClientUpdate


class FedAvg(AsyncStrategy):
    """Federated Averaging with a barrier of ``concurrency`` clients per round.

    Each round samples C clients, waits for all of them on the same clock and
    delays as the asynchronous strategies, and moves the model to the
    average of the client models weighted by their number of examples:

        x ← x + R(Δ, n) = Σ_i n_i x_i / Σ_i n_i     (R = weighted mean)

    This is the same rule as Flower's ``FedAvg`` (its ``aggregate_train``),
    run on fedstale's loop so that comparisons with FedAsync and FedBuff use
    the same clients, delays and virtual clock. With a robust reducer R
    (median, trimmed mean, Krum, ...) it is the synchronous robust
    aggregation of Flower's ``FedMedian``, ``FedTrimmedAvg``, ``Krum``... on
    the round's deltas. With trust on, n_i is multiplied by the client's
    trust and quarantined clients are left out of the round (but scored).

    With a server optimizer the round's mean delta d = R(Δ, n) is its
    pseudo-gradient: x ← x + η·u(d) (:mod:`fedstale.aggregation.optimizers`);
    Adam, Yogi and Adagrad are then Flower's ``FedAdam``, ``FedYogi`` and
    ``FedAdagrad`` (tested against them).

    Parameters
    ----------
    reducer : Reducer | None (default: None)
        R; None is the weighted mean.
    server_optimizer : ServerOptimizer | None (default: None)
        Steps on d; None is plain SGD with η = 1 (x ← x + d).
    **kwargs
        Passed to :class:`~fedstale.strategies.base.AsyncStrategy`.
    """

    supported_modes = ("sync",)

    def __init__(
        self,
        *,
        reducer: Reducer | None = None,
        server_optimizer: ServerOptimizer | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "sync")
        super().__init__(**kwargs)
        self.reducer = reducer if reducer is not None else WeightedMean()
        self.server_optimizer = server_optimizer if server_optimizer is not None else SGD()

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        if hasattr(self, "reducer"):
            self.reducer.reset()
        if hasattr(self, "server_optimizer"):
            self.server_optimizer.reset()

    def extra_run_state(self) -> dict[str, Any]:
        """The server optimizer's state (for resume)."""
        return {"server_optimizer": capture(self.server_optimizer)}

    def load_extra_run_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`extra_run_state` returned."""
        if "server_optimizer" in state:  # absent from resume points before optimizers
            restore(self.server_optimizer, state["server_optimizer"])

    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """x + η·u(R(Δ, n)); with SGD, η = 1: the example-weighted average of the client models."""
        active, held = self._set_aside_quarantined(updates)
        if not active:
            return None
        sizes = torch.tensor(
            [u.num_examples * self._trust_weight(u) for u in active], dtype=torch.float64
        )
        weights = sizes / sizes.sum() if sizes.sum() > 0 else torch.full_like(sizes, 1 / len(sizes))
        for update, weight in zip(active, weights):
            update.weight = float(weight)
        deltas = torch.stack([u.delta for u in active])
        # trust first: the aggregator owns the stack and may overwrite it
        self._score([*active, *held], deltas)
        direction = self.reducer(deltas, weights.to(deltas.dtype))
        return self.server_optimizer.step(model, direction)
