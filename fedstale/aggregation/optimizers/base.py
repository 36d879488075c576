"""What every server optimizer shares: one step on the aggregated pseudo-gradient.

The strategies aggregate their clients' deltas into one pseudo-gradient d
(FedBuff's buffered mean, FedAvg's round mean, FedAsync's x_new − x) and
hand it to a :class:`ServerOptimizer`, which moves the model:

    x ← x + r·η·u(d)

with η the server learning rate, r the strategy's rate (1, or FedAsync's
α_t = α·s(τ)) and u the optimizer's direction. :class:`AdaptiveOptimizer`
is the family of Reddi et al. (ICLR 2021, "Adaptive Federated
Optimization"): u(d) = c_t·m/(√v + τ) with a first moment m, a second moment
v (its update is what tells Adam, Yogi and Adagrad apart) and a bias
correction c_t (Adam's; 1 otherwise).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class ServerOptimizer(ABC):
    """One server step x ← x + r·η·u(d) on a pseudo-gradient d.

    Parameters
    ----------
    lr : float (default: 1.0)
        η, the server learning rate (Flower's ``eta``), > 0.

    Attributes
    ----------
    run_state_attributes : tuple[str, ...]
        The attributes :meth:`reset` clears; a resume point saves them
        (:func:`fedstale.component_state.capture`).
    """

    name: str = ""
    run_state_attributes: tuple[str, ...] = ()

    def __init__(self, lr: float = 1.0) -> None:
        if lr <= 0:
            raise ValueError(f"server learning rate must be > 0, got {lr}")
        self.lr = lr
        self.reset()

    def reset(self) -> None:
        """Forget the moments (start of a run)."""

    @abstractmethod
    def direction(self, pseudo_gradient: torch.Tensor) -> torch.Tensor:
        """u(d); updates the optimizer's state, so call it once per server step."""

    def step(
        self, model: torch.Tensor, pseudo_gradient: torch.Tensor, rate: float = 1.0
    ) -> torch.Tensor:
        """x + r·η·u(d)."""
        return model + (rate * self.lr) * self.direction(pseudo_gradient)

    def mix(self, model: torch.Tensor, target: torch.Tensor, rate: float) -> torch.Tensor:
        """FedAsync's step towards a client model: x + r·η·u(x_new − x)."""
        return self.step(model, target - model, rate)

    def describe(self) -> str:
        """The rule with its parameters, for logs."""
        return f"{self.name} (η={self.lr:g})"


class AdaptiveOptimizer(ServerOptimizer):
    """m ← β1·m + (1 − β1)·d, v ← V(v, d²), u = c_t·m/(√v + τ).

    m and v start at 0 (as in Flower's FedOpt); t counts the steps (1 at the
    first).

    Parameters
    ----------
    lr : float (default: 0.1)
        η (Flower's ``eta``).
    beta_1 : float (default: 0.9)
        β1 in [0, 1), the first moment's decay.
    beta_2 : float (default: 0.99)
        β2 in [0, 1), the second moment's decay (Adam, Yogi; Adagrad has none).
    tau : float (default: 1e-3)
        τ > 0, the adaptivity: small τ makes the step per coordinate close
        to η·sign(m) (not the staleness τ).
    """

    run_state_attributes = ("m", "v", "steps")

    def __init__(
        self, lr: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.beta_1, self.beta_2, self.tau = beta_1, beta_2, tau
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.steps = 0
        super().__init__(lr)

    def reset(self) -> None:
        """m = v = 0, t = 0."""
        self.m, self.v, self.steps = None, None, 0

    @abstractmethod
    def second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        """The new v from the old one and d² (elementwise)."""

    def bias_correction(self) -> float:
        """c_t (1: none)."""
        return 1.0

    def direction(self, pseudo_gradient: torch.Tensor) -> torch.Tensor:
        """Update m, v and t; return c_t·m/(√v + τ)."""
        if self.m is None or self.v is None:
            self.m = torch.zeros_like(pseudo_gradient)
            self.v = torch.zeros_like(pseudo_gradient)
        self.steps += 1
        self.m = self.beta_1 * self.m + (1 - self.beta_1) * pseudo_gradient
        self.v = self.second_moment(self.v, pseudo_gradient * pseudo_gradient)
        return self.bias_correction() * self.m / (torch.sqrt(self.v) + self.tau)

    def describe(self) -> str:
        """The rule with its parameters, for logs."""
        return (
            f"{self.name} (η={self.lr:g}, β1={self.beta_1:g}, β2={self.beta_2:g}, "
            f"τ={self.tau:g})"
        )
