"""Dynamic staleness: FedBuff whose staleness weighting adapts during the run."""

from __future__ import annotations

from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from .fedbuff import FedBuff
from .task import ClientUpdate


class DynamicStaleness(FedBuff):
    """FedBuff with a staleness weight that follows the observed staleness.

    A fixed s(τ) is tuned for one level of concurrency: with C clients in
    flight, typical staleness grows with C, and 1/√(1 + τ) then discounts
    *every* update. Following Port and Plato (b/(τ + b) combined with the
    update's agreement with the model's recent direction), this strategy
    measures what "stale" means during the run. For an update with
    staleness τ and delta Δ, received when the running mean staleness is τ̄:

        τ̄ ← β·τ̄ + (1 − β)·τ                     (EMA over received updates,
                                                  τ̄ = τ at the first one)
        b  = max(b_min, τ̄)
        s  = b / (b + τ)                          (1/2 at typical staleness)
        c  = cos(Δ, g)                            (g: the last server step;
                                                  c = 1 before the first)
        w  = s · ((1 + c)/2)^γ

    Updates as stale as usual keep half their weight whatever C is; unusually
    stale ones, and ones that point against the model's current direction,
    count less. The weights then enter FedBuff's step (buffer K,
    normalisation, server learning rate and momentum) unchanged.

    Parameters
    ----------
    ema : float (default: 0.9)
        β in [0, 1).
    b_min : float (default: 1.0)
        Floor of b (> 0), so that early fresh updates are not over-penalised.
    similarity_exponent : float (default: 1.0)
        γ ≥ 0; 0 disables the agreement factor.
    **kwargs
        Passed to :class:`~fedstale.strategies.fedbuff.FedBuff`.
    """

    def __init__(
        self,
        *,
        ema: float = 0.9,
        b_min: float = 1.0,
        similarity_exponent: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if not 0 <= ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        if b_min <= 0:
            raise ValueError(f"b_min must be > 0, got {b_min}")
        if similarity_exponent < 0:
            raise ValueError(f"similarity_exponent must be >= 0, got {similarity_exponent}")
        super().__init__(**kwargs)
        self.ema = ema
        self.b_min = b_min
        self.similarity_exponent = similarity_exponent
        self.mean_staleness: float | None = None
        self._last_step: torch.Tensor | None = None

    def summary(self) -> None:
        """Log the configuration."""
        log(
            INFO,
            "\t├──> Dynamic staleness: w = b/(b+τ)·((1+cos)/2)^%g, b = max(%g, EMA_%g(τ))",
            self.similarity_exponent,
            self.b_min,
            self.ema,
        )
        super().summary()

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self.mean_staleness = None
        self._last_step = None

    def extra_run_state(self) -> dict[str, Any]:
        """FedBuff's, plus the staleness EMA τ̄ and the last step g."""
        return super().extra_run_state() | {
            "mean_staleness": self.mean_staleness,
            "last_step": self._last_step,
        }

    def load_extra_run_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`extra_run_state` returned."""
        super().load_extra_run_state(state)
        self.mean_staleness = state["mean_staleness"]
        self._last_step = state["last_step"]

    def staleness_weight(self, update: ClientUpdate) -> float:
        """w = b/(b + τ) · ((1 + cos(Δ, g))/2)^γ, updating τ̄ first."""
        tau = float(update.staleness)
        if self.mean_staleness is None:
            self.mean_staleness = tau
        else:
            self.mean_staleness = self.ema * self.mean_staleness + (1 - self.ema) * tau
        b = max(self.b_min, self.mean_staleness)
        weight = b / (b + tau)
        if self.similarity_exponent > 0 and self._last_step is not None:
            cosine = float(
                torch.nn.functional.cosine_similarity(
                    update.delta.double(), self._last_step.double(), dim=0, eps=1e-12
                )
            )
            weight *= ((1.0 + cosine) / 2.0) ** self.similarity_exponent
        return weight

    def server_step(
        self,
        model: torch.Tensor,
        buffer: list[ClientUpdate],
        held: list[ClientUpdate] | None = None,
    ) -> torch.Tensor:
        """FedBuff's step; remember it as the direction g."""
        new_model = super().server_step(model, buffer, held)
        self._last_step = new_model - model
        return new_model
