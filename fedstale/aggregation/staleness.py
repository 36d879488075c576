"""Staleness functions s(τ): how much an update computed τ versions ago counts.

Staleness τ = (server model version now) − (version the client started from).
Every function maps τ ≥ 0 to a weight in (0, 1] with s(0) = 1 and is
non-increasing in τ.

Names follow the literature and are the values of ``strategy.staleness.name``:

- ``constant``: s(τ) = 1 (FedAsync, Xie et al. 2019)
- ``polynomial``: s(τ) = (τ + 1)^(−a) (FedAsync; a = 0.5 gives FedBuff's
  1/√(1 + τ), Nguyen et al. 2022)
- ``hinge``: s(τ) = 1 if τ ≤ b else 1 / (a(τ − b) + 1) (FedAsync)
- ``exponential``: s(τ) = w^τ (Papaya's ``staleness_weight``, Huba et al. 2022),
  optionally also decaying per second of the update's age: w^τ · w_s^a

:meth:`StalenessFunction.weight` is what the strategies call: s(τ), and for
the exponential function with ``w_per_second`` < 1 the time decay as well
(a = seconds since the update's base version was made).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass


class StalenessFunction(ABC):
    """A weight s(τ) for an update that is τ model versions old."""

    name: str = ""

    @abstractmethod
    def __call__(self, staleness: float) -> float:
        """Return the weight of an update with staleness ``staleness`` ≥ 0."""

    def weight(self, staleness: float, age: float = 0.0) -> float:
        """The weight of an update ``staleness`` versions and ``age`` seconds old: s(τ) by default."""
        del age
        return self(staleness)

    def describe(self) -> str:
        """Return the formula with its parameters, for logs."""
        return self.name


@dataclass(frozen=True)
class Constant(StalenessFunction):
    """s(τ) = 1: staleness is ignored."""

    name = "constant"

    def __call__(self, staleness: float) -> float:
        """Return 1 for any staleness."""
        return 1.0

    def describe(self) -> str:
        """Return the formula."""
        return "s(τ) = 1"


@dataclass(frozen=True)
class Polynomial(StalenessFunction):
    """s(τ) = (τ + 1)^(−a).

    Parameters
    ----------
    a : float
        Decay exponent, a ≥ 0. a = 0.5 is FedBuff's default 1/√(1 + τ).
    """

    a: float = 0.5
    name = "polynomial"

    def __call__(self, staleness: float) -> float:
        """Return (τ + 1)^(−a)."""
        return float((staleness + 1.0) ** (-self.a))

    def describe(self) -> str:
        """Return the formula."""
        return f"s(τ) = (τ + 1)^(-{self.a:g})"


@dataclass(frozen=True)
class Hinge(StalenessFunction):
    """s(τ) = 1 if τ ≤ b else 1 / (a(τ − b) + 1).

    Parameters
    ----------
    a : float
        Slope of the decay after the hinge, a ≥ 0 (FedAsync uses 10).
    b : float
        Staleness tolerated without penalty, b ≥ 0 (FedAsync uses 4).
    """

    a: float = 10.0
    b: float = 4.0
    name = "hinge"

    def __call__(self, staleness: float) -> float:
        """Return the hinge weight."""
        if staleness <= self.b:
            return 1.0
        return 1.0 / (self.a * (staleness - self.b) + 1.0)

    def describe(self) -> str:
        """Return the formula."""
        return f"s(τ) = 1 if τ <= {self.b:g} else 1/({self.a:g}(τ - {self.b:g}) + 1)"


@dataclass(frozen=True)
class Exponential(StalenessFunction):
    """s(τ) = w^τ (Papaya's ``staleness_weight``), times w_s^a per second of age.

    Parameters
    ----------
    w : float
        Per-version decay, 0 < w ≤ 1 (Papaya uses 0.95 to 0.99).
    w_per_second : float (default: 1.0)
        Per-second decay w_s, 0 < w_s ≤ 1: an update whose base version was
        made a seconds before it is merged weighs w^τ · w_s^a (1: versions
        only).
    """

    w: float = 0.98
    w_per_second: float = 1.0
    name = "exponential"

    def __call__(self, staleness: float) -> float:
        """Return w^τ."""
        return float(math.pow(self.w, staleness))

    def weight(self, staleness: float, age: float = 0.0) -> float:
        """w^τ · w_s^a (w^τ when w_s = 1)."""
        if self.w_per_second == 1.0:
            return self(staleness)
        return self(staleness) * float(math.pow(self.w_per_second, age))

    def describe(self) -> str:
        """Return the formula."""
        if self.w_per_second == 1.0:
            return f"s(τ) = {self.w:g}^τ"
        return f"s(τ, a) = {self.w:g}^τ · {self.w_per_second:g}^a (a in seconds)"


STALENESS_FUNCTIONS: dict[str, type[StalenessFunction]] = {
    cls.name: cls for cls in (Constant, Polynomial, Hinge, Exponential)
}
"""Registry keyed by the names used in YAML (``strategy.staleness.name``)."""

STALENESS_PARAMETERS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "polynomial": ("a",),
    "hinge": ("a", "b"),
    "exponential": ("w", "w_per_second"),
}
"""The parameters each staleness function reads from ``strategy.staleness``."""


def make_staleness_function(name: str, **params: float) -> StalenessFunction:
    """Build a staleness function from its YAML name and parameters.

    Only the parameters the function uses are passed on; see
    ``STALENESS_PARAMETERS``.
    """
    if name not in STALENESS_FUNCTIONS:
        raise ValueError(
            f"unknown staleness function '{name}'; "
            f"accepted: {', '.join(STALENESS_FUNCTIONS)}"
        )
    used = {k: float(params[k]) for k in STALENESS_PARAMETERS[name] if k in params}
    return STALENESS_FUNCTIONS[name](**used)
