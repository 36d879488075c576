"""FedAsync (Xie, Koyejo & Gupta, 2019): mix each update in as it arrives."""

from __future__ import annotations

from collections import deque
from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from ..aggregation.filters import NormBound, ValidationCheck
from ..aggregation.optimizers import SGD, ServerOptimizer
from ..component_state import capture, restore
from .base import AsyncStrategy
from .task import ClientUpdate


class FedAsync(AsyncStrategy):
    """Asynchronous federated optimisation.

    On each arriving client model x_new with staleness τ:

        x ← (1 − α_t)·x + α_t·x_new,   α_t = α·s(τ)·T

    where T is the client's trust (1 when trust is off). This is the server
    optimizer's step with rate α_t on the pseudo-gradient d = x_new − x,
    x ← x + α_t·η·u(d): SGD with η = 1 and no momentum (the default) gives
    the rule above; Adam, Yogi or Adagrad
    (:mod:`fedstale.aggregation.optimizers`) give x ← x + α_t·η·c_t·m/(√v + τ).

    One update at a time cannot be medianed, so robustness comes from
    per-update checks (:mod:`fedstale.aggregation.filters`) and trust: with
    trust on, each update's delta Δ = x_new − x_start is scored against the
    coordinate-wise median of the last ``trust_window`` accepted deltas, and
    quarantined clients' updates are not mixed in.

    With central DP (``central_dp``) each arriving x_new is first replaced by
    x_start + clip_C(Δ) + N(0, (z·C)²): one update is an aggregate of K = 1.

    Parameters
    ----------
    alpha : float (default: 0.6)
        Mixing hyperparameter α in (0, 1] (the paper uses 0.5 to 0.9).
    norm_bound : NormBound | None (default: None)
        Reject updates much longer than the recent accepted ones.
    validation : ValidationCheck | None (default: None)
        Reject updates that raise the server's validation loss (Zeno++-like).
    trust_window : int (default: 10)
        Accepted deltas whose median is the trust reference.
    server_optimizer : ServerOptimizer | None (default: None)
        The step on d = x_new − x; None is SGD with η = 1 (the mixing rule).
    **kwargs
        Passed to :class:`~fedstale.strategies.base.AsyncStrategy`
        (``staleness`` is s(τ); FedAsync is asynchronous only).
    """

    supported_modes = ("async",)

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        *,
        alpha: float = 0.6,
        norm_bound: NormBound | None = None,
        validation: ValidationCheck | None = None,
        trust_window: int = 10,
        server_optimizer: ServerOptimizer | None = None,
        **kwargs: Any,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        super().__init__(**kwargs)
        self.alpha = alpha
        self.norm_bound = norm_bound
        self.validation = validation
        self._recent: deque[torch.Tensor] = deque(maxlen=trust_window)
        self.server_optimizer = server_optimizer if server_optimizer is not None else SGD()

    def summary(self) -> None:
        """Log the configuration."""
        log(INFO, "\t├──> Mixing: x <- (1 - α_t) x + α_t x_new, α = %g", self.alpha)
        super().summary()

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        if hasattr(self, "_recent"):
            self._recent.clear()
        if getattr(self, "norm_bound", None) is not None:
            self.norm_bound.reset()
        if hasattr(self, "server_optimizer"):
            self.server_optimizer.reset()

    def extra_run_state(self) -> dict[str, Any]:
        """Recent accepted deltas (trust reference), the norm filter's history, the optimizer's state."""
        return {
            "recent": list(self._recent),
            "norm_bound": capture(self.norm_bound),
            "server_optimizer": capture(self.server_optimizer),
        }

    def load_extra_run_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`extra_run_state` returned."""
        self._recent.clear()
        self._recent.extend(state["recent"])
        restore(self.norm_bound, state["norm_bound"])
        if "server_optimizer" in state:  # absent from resume points before optimizers
            restore(self.server_optimizer, state["server_optimizer"])

    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """Mix each update into the model in turn, unless it is rejected."""
        changed = False
        for update in updates:
            if self.central_dp is not None:
                self._privatize(update)
            self._score_against_recent(update)
            reason = self._screen(update)
            if reason is not None:
                update.reject(reason)
                continue
            staleness = self.staleness.weight(update.staleness, update.age)
            alpha_t = self.alpha * staleness * self._trust_weight(update)
            before = None if self.validation is None else capture(self.server_optimizer)
            proposed = self.server_optimizer.mix(model, update.params, alpha_t)
            if self.validation is not None:
                reason = self.validation.check(model, proposed)
                if reason is not None:
                    restore(self.server_optimizer, before)  # a refused step leaves no moment
                    update.reject(reason)
                    continue
            update.weight = alpha_t
            model, changed = proposed, True
            if self.norm_bound is not None:
                self.norm_bound.accept(update.delta)
            self._recent.append(update.delta)
        return model if changed else None

    def _privatize(self, update: ClientUpdate) -> None:
        """Replace x_new by x_start + clip_C(Δ) + N(0, (z·C)²) (central DP, K = 1).

        Everything after (trust, filters, mixing with α_t) only sees the
        noisy update, so it is post-processing of one accounted release.
        """
        assert self.central_dp is not None
        clipped = self.central_dp.clip(update.delta.unsqueeze(0))[0]
        update.params = update.base + self.central_dp.release(clipped, 1)

    def _score_against_recent(self, update: ClientUpdate) -> None:
        """Trust score against the median of recently accepted deltas."""
        if self.trust is None or len(self._recent) < 2:
            return
        self._score([update], torch.stack(list(self._recent)))

    def _screen(self, update: ClientUpdate) -> str | None:
        """Why the update must not be mixed in (quarantine, norm), or None."""
        if self.trust is not None and self.trust.is_quarantined(update.task.client_id):
            return f"quarantined (trust {self.trust.trust(update.task.client_id):.3f})"
        if self.norm_bound is not None:
            return self.norm_bound.check(update.delta)
        return None
