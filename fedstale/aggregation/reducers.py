"""Buffer reducers: combine n update vectors into one.

A reducer receives a stack of updates ``U`` (shape ``[n, d]``) and
non-negative weights ``w`` (shape ``[n]``) and returns a location estimate of
shape ``[d]`` that is invariant to scaling all weights by the same factor.
The strategy decides the normalisation around it (FedBuff divides by the
buffer size K or by Σw; see :class:`fedstale.strategies.FedBuff`).

Only the weighted mean lives here for now; robust reducers register under
their YAML names in ``REDUCERS`` the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Reducer(ABC):
    """Combine a buffer of update vectors into one vector."""

    name: str = ""

    @abstractmethod
    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Return the aggregate of ``updates`` ([n, d]) under ``weights`` ([n])."""


class WeightedMean(Reducer):
    """Σ w_i u_i / Σ w_i (the FedAvg/FedBuff mean)."""

    name = "mean"

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Return the weighted mean of the rows of ``updates``."""
        total = weights.sum()
        if total <= 0:
            raise ValueError("weights must have a positive sum")
        return (weights.to(updates.dtype) / total) @ updates


REDUCERS: dict[str, type[Reducer]] = {cls.name: cls for cls in (WeightedMean,)}
"""Registry keyed by the names used in YAML (``strategy.reducer``)."""
