"""Omniscient attacks: a malicious delta crafted from the honest clients' deltas.

These attackers need statistics of the honest updates, which in a real
federation only the server sees, so the simulation applies them on the
server side (:class:`fedstale.simulation.adversary.Adversary` replaces a
malicious client's delta by ``craft(honest)``). Both follow byzfl 0.0.11
(``byzfl.ALittleIsEnough``, ``byzfl.InnerProductManipulation``) exactly:
same operations, in the dtype of the input, so a float32 input gives
byzfl's float32 result bit for bit (tested).

- ``alie`` (A Little Is Enough, Baruch et al., NeurIPS 2019): μ + z·σ,
  coordinate-wise over the n honest deltas, σ the *sample* standard
  deviation (ddof = 1, divisor n − 1), as byzfl computes it
  (``sqrt(var(x, ddof=1))``; byzfl's docstring writes 1/n, its code uses
  n − 1). The sign follows byzfl (``mean + tau·std``, ``tau`` = z); the
  paper's shift is the same with z of either sign. With a single honest
  delta σ is taken as 0 (byzfl would return NaN).
- ``ipm`` (Inner Product Manipulation, Xie et al., UAI 2020): −ε·μ, a delta
  whose inner product with the honest mean is negative.

With no honest delta at all, ``craft`` returns None and the caller keeps
the attacker's own update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


def _check(honest: torch.Tensor) -> None:
    if honest.dim() != 2:
        raise ValueError(f"honest deltas must be a [n, d] tensor, got shape {tuple(honest.shape)}")


def alie(honest: torch.Tensor, z: float) -> torch.Tensor:
    """A Little Is Enough: μ + z·σ over the rows of ``honest`` [n ≥ 1, d] (σ with ddof = 1)."""
    _check(honest)
    if len(honest) < 1:
        raise ValueError("alie needs at least one honest delta")
    mean = torch.mean(honest, dim=0)
    if len(honest) == 1:
        return mean
    spread = torch.sqrt(torch.var(honest, dim=0, correction=1))
    return torch.add(mean, torch.mul(spread, z))


def ipm(honest: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Inner Product Manipulation: −ε·μ over the rows of ``honest`` [n ≥ 1, d]."""
    _check(honest)
    if len(honest) < 1:
        raise ValueError("ipm needs at least one honest delta")
    return torch.mul(torch.mean(honest, dim=0), -epsilon)


class OmniscientAttack(ABC):
    """Craft a malicious delta from the honest deltas the attacker has seen."""

    name: str = ""

    def craft(self, honest: torch.Tensor) -> torch.Tensor | None:
        """The malicious delta [d] from honest deltas [n, d]; None when n = 0."""
        _check(honest)
        return None if len(honest) == 0 else self.formula(honest)

    @abstractmethod
    def formula(self, honest: torch.Tensor) -> torch.Tensor:
        """The attack's delta from n ≥ 1 honest deltas."""


class ALittleIsEnough(OmniscientAttack):
    """``alie(z)``: μ + z·σ over the honest deltas (byzfl ``ALittleIsEnough(tau=z)``)."""

    name = "alie"

    def __init__(self, z: float = 1.5) -> None:
        self.z = float(z)

    def formula(self, honest: torch.Tensor) -> torch.Tensor:
        """μ + z·σ."""
        return alie(honest, self.z)


class InnerProductManipulation(OmniscientAttack):
    """``ipm(epsilon)``: −ε·μ over the honest deltas (byzfl ``InnerProductManipulation(tau=ε)``)."""

    name = "ipm"

    def __init__(self, epsilon: float = 10.0) -> None:
        self.epsilon = float(epsilon)

    def formula(self, honest: torch.Tensor) -> torch.Tensor:
        """−ε·μ."""
        return ipm(honest, self.epsilon)


OMNISCIENT_ATTACKS: dict[str, type[OmniscientAttack]] = {
    cls.name: cls for cls in (ALittleIsEnough, InnerProductManipulation)
}
"""Registry keyed by ``attack.name``: ``alie`` (``z``) and ``ipm`` (``epsilon``)."""
