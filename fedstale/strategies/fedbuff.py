"""FedBuff (Nguyen et al., AISTATS 2022): buffered asynchronous aggregation."""

from __future__ import annotations

import math
from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from ..aggregation.optimizers import SGD, ServerOptimizer
from ..aggregation.reducers import Reducer, WeightedMean
from ..component_state import capture, restore
from .base import AsyncStrategy
from .task import ClientUpdate

NORMALIZATIONS = ("count", "weight_sum")


class FedBuff(AsyncStrategy):
    """Buffered asynchronous aggregation.

    Clients return Δ_i = x_local − x_start, where x_start is the model version
    they trained from. Each Δ_i gets the weight w_i = s(τ_i) (× n_i/n̄ with
    ``weight_by_examples``). When the buffer holds K updates:

        d = (Σ_i w_i / K) · R(Δ, w)      normalization="count" (default)
        d = R(Δ, w)                      normalization="weight_sum"

    where R is the buffer reducer (the weighted mean Σ w_i Δ_i / Σ w_i by
    default, so "count" is the paper's (1/K) Σ s(τ_i) Δ_i and "weight_sum" is
    Σ s(τ_i) Δ_i / Σ s(τ_i)). Then the server optimizer steps on d; by
    default SGD with server momentum β and learning rate η_g:

        m ← β·m + d,   x ← x + η_g·m     (β = 0: x ← x + η_g·d)

    and with an adaptive one (:mod:`fedstale.aggregation.optimizers`: Adam,
    Yogi, Adagrad) x ← x + η·c_t·m/(√v + τ).

    "count" shrinks the step when the buffer is stale (stale updates count
    less *and* the step is smaller); "weight_sum" only reweights within the
    buffer, so the step size does not depend on staleness.

    In ``sync`` mode the buffer is the whole round of ``concurrency`` clients
    (K is ignored), all with τ = 0.

    With ``aggregation_delay`` D (Papaya / FL-GO's timer), a buffer that
    holds at least ``min_updates`` updates is also flushed once D clock
    seconds have passed since its first update arrived, even if it is not
    full: at that instant if it already holds enough, else at the arrival
    that brings it to ``min_updates``. The loop's clock moves to the timer
    (:meth:`next_timer`) when no reply can be delivered before it.

    With central DP (``central_dp``) each Δ_i is clipped to norm C before the
    reducer and N(0, (z·C/K)²) is added to d, with K the updates in the
    buffer; "count" normalization keeps one client's influence on d below
    C/K (w_i ≤ 1), which the noise is calibrated to.

    With a robust reducer (median, Krum, ...) the location R(Δ, w) ignores
    the weights (a median has no weights); staleness still scales the step
    through Σw/K. With trust on, w_i is multiplied by the client's trust,
    quarantined clients' updates wait outside the buffer and are scored
    against the buffer's aggregate R at the next step, like the others.

    Parameters
    ----------
    buffer_size : int (default: 10)
        K, updates per server step.
    server_lr : float (default: 1.0)
        η_g.
    server_momentum : float (default: 0.0)
        β in [0, 1).
    server_optimizer : ServerOptimizer | None (default: None)
        Steps on d; None is ``SGD(server_lr, server_momentum)`` (the two
        are then ignored).
    normalization : str (default: "count")
        "count" or "weight_sum", see above.
    weight_by_examples : bool (default: False)
        Multiply each weight by n_i / mean(n) over the buffer.
    reducer : Reducer | None (default: None)
        R; None is the weighted mean.
    **kwargs
        Passed to :class:`~fedstale.strategies.base.AsyncStrategy`.
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        *,
        buffer_size: int = 10,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        normalization: str = "count",
        weight_by_examples: bool = False,
        reducer: Reducer | None = None,
        aggregation_delay: float | None = None,
        min_updates: int = 1,
        server_optimizer: ServerOptimizer | None = None,
        **kwargs: Any,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if not 1 <= min_updates <= buffer_size:
            raise ValueError(f"min_updates must be in [1, buffer_size], got {min_updates}")
        if aggregation_delay is not None and aggregation_delay <= 0:
            raise ValueError(f"aggregation_delay must be > 0, got {aggregation_delay}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got '{normalization}'"
            )
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        super().__init__(**kwargs)
        self.buffer_size = buffer_size
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.normalization = normalization
        self.weight_by_examples = weight_by_examples
        self.reducer = reducer if reducer is not None else WeightedMean()
        self.server_optimizer = (
            server_optimizer
            if server_optimizer is not None
            else SGD(lr=server_lr, momentum=server_momentum)
        )
        self.aggregation_delay, self.min_updates = aggregation_delay, min_updates
        self._buffer: list[ClientUpdate] = []
        self._held: list[ClientUpdate] = []
        self._buffer_since: float | None = None

    def summary(self) -> None:
        """Log the configuration."""
        log(
            INFO,
            "\t├──> Buffer K=%d, server optimizer %s, normalization=%s, reducer=%s",
            self.buffer_size,
            self.server_optimizer.describe(),
            self.normalization,
            self.reducer.name,
        )
        super().summary()

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self._buffer = []
        self._held = []
        self._buffer_since = None
        if hasattr(self, "reducer"):
            self.reducer.reset()
        if hasattr(self, "server_optimizer"):
            self.server_optimizer.reset()

    def extra_run_state(self) -> dict[str, Any]:
        """The server optimizer's and the reducer's state (for resume).

        ``momentum`` is SGD's momentum buffer (None for the other
        optimizers), under the key resume points have always had it. The
        buffer is empty at every resume point: a new version is made by
        flushing it.
        """
        momentum = getattr(self.server_optimizer, "momentum_buffer", None)
        return {
            "momentum": momentum,
            "reducer": capture(self.reducer),
            "server_optimizer": capture(self.server_optimizer),
        }

    def load_extra_run_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`extra_run_state` returned."""
        if "server_optimizer" in state:
            restore(self.server_optimizer, state["server_optimizer"])
        elif isinstance(self.server_optimizer, SGD):  # a resume point from before optimizers
            self.server_optimizer.momentum_buffer = state["momentum"]
        restore(self.reducer, state["reducer"])

    def staleness_weight(self, update: ClientUpdate) -> float:
        """s(τ) of one update (with its age in seconds), computed when it is received."""
        return self.staleness.weight(update.staleness, update.age)

    def weights(self, updates: list[ClientUpdate]) -> torch.Tensor:
        """w_i: each update's staleness weight, × n_i / mean(n) if asked."""
        weights = torch.tensor([u.weight for u in updates], dtype=torch.float64)
        if self.weight_by_examples:
            sizes = torch.tensor([u.num_examples for u in updates], dtype=torch.float64)
            weights = weights * sizes / sizes.mean()
        return weights

    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """Buffer the updates; step once the buffer is full (or the round ends)."""
        active, held = self._set_aside_quarantined(updates)
        for update in active:
            update.weight = self.staleness_weight(update) * self._trust_weight(update)
        self._buffer.extend(active)
        self._held.extend(held)
        if self._buffer and self._buffer_since is None:
            self._buffer_since = self.clock.now
        if self.mode == "async" and len(self._buffer) < self.buffer_size:
            if not self._buffer or self.next_timer() > self.clock.now:
                return None
        return self._flush(model)

    def next_timer(self) -> float:
        """When a buffer of at least ``min_updates`` has waited ``aggregation_delay`` (inf: never)."""
        if (
            self.aggregation_delay is None
            or self.mode != "async"
            or self._buffer_since is None
            or len(self._buffer) < self.min_updates
        ):
            return math.inf
        return self._buffer_since + self.aggregation_delay

    def on_timer(self, model: torch.Tensor) -> torch.Tensor | None:
        """The buffer has waited ``aggregation_delay``: flush it, full or not."""
        return self._flush(model)

    def _flush(self, model: torch.Tensor) -> torch.Tensor | None:
        """One server step from the buffer (None if it is empty); the buffer starts over."""
        buffer, self._buffer = self._buffer, []
        held, self._held = self._held, []
        self._buffer_since = None
        if not buffer:
            return None
        return self.server_step(model, buffer, held)

    def server_step(
        self,
        model: torch.Tensor,
        buffer: list[ClientUpdate],
        held: list[ClientUpdate] | None = None,
    ) -> torch.Tensor:
        """Apply one server step from a full buffer; score buffer and held updates."""
        weights = self.weights(buffer)
        deltas = torch.stack([u.delta for u in buffer])
        if self.central_dp is not None:
            deltas = self.central_dp.clip(deltas)
        # trust first: the aggregator owns the stack and may overwrite it
        self._score([*buffer, *(held or [])], deltas)
        direction = self.reducer(deltas, weights.to(deltas.dtype))
        if self.normalization == "count":
            direction = direction * float(weights.sum() / len(buffer))
        if self.central_dp is not None:
            direction = self.central_dp.release(direction, len(buffer))
        return self.apply_direction(model, direction)

    def apply_direction(self, model: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """The server optimizer's step on d (SGD: m ← β·m + d, x ← x + η_g·m)."""
        return self.server_optimizer.step(model, direction)
