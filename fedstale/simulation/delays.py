"""Delay models: how long a simulated client takes, in virtual seconds.

A client's task duration is

    duration = speed_c · num_examples · epochs · jitter + communication

- ``speed_c`` (seconds per training example) is drawn once per client from a
  :class:`Distribution` (FLSim's per-example duration model); heavy tails
  (Pareto, lognormal) give the stragglers of real deployments;
- ``jitter`` is a mean-1 lognormal factor drawn per task (σ = ``jitter``;
  0 disables it);
- ``communication = 2·latency + (bytes_down + bytes_up) / bandwidth``.

Every draw comes from its own generator seeded by ``(seed, client, task
index)``, so a duration does not depend on the order in which clients are
dispatched or on which worker trains them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class Distribution(ABC):
    """A positive random variable, in seconds per example."""

    name: str = ""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> float:
        """Draw one value."""

    @property
    @abstractmethod
    def mean(self) -> float:
        """The expected value (inf if it does not exist)."""


@dataclass(frozen=True)
class ConstantDistribution(Distribution):
    """Always ``value``."""

    value: float
    name = "constant"

    def sample(self, rng: np.random.Generator) -> float:
        """Return ``value``."""
        return self.value

    @property
    def mean(self) -> float:
        """Return ``value``."""
        return self.value


@dataclass(frozen=True)
class UniformDistribution(Distribution):
    """Uniform on [low, high]."""

    low: float
    high: float
    name = "uniform"

    def sample(self, rng: np.random.Generator) -> float:
        """Draw from U(low, high)."""
        return float(rng.uniform(self.low, self.high))

    @property
    def mean(self) -> float:
        """Return (low + high) / 2."""
        return (self.low + self.high) / 2


@dataclass(frozen=True)
class ExponentialDistribution(Distribution):
    """Exponential with the given mean."""

    mean_value: float
    name = "exponential"

    def sample(self, rng: np.random.Generator) -> float:
        """Draw from Exp(1/mean)."""
        return float(rng.exponential(self.mean_value))

    @property
    def mean(self) -> float:
        """Return the mean."""
        return self.mean_value


@dataclass(frozen=True)
class LogNormalDistribution(Distribution):
    """Lognormal with the given mean and log-scale σ (FedScale's model).

    μ = ln(mean) − σ²/2, so that E[X] = ``mean`` whatever σ.
    """

    mean_value: float
    sigma: float
    name = "lognormal"

    def sample(self, rng: np.random.Generator) -> float:
        """Draw from LogNormal(μ, σ)."""
        mu = math.log(self.mean_value) - self.sigma**2 / 2
        return float(rng.lognormal(mu, self.sigma))

    @property
    def mean(self) -> float:
        """Return the mean."""
        return self.mean_value


@dataclass(frozen=True)
class ParetoDistribution(Distribution):
    """Pareto (type I) with shape α and scale x_m, optionally capped.

    P(X > x) = (x_m / x)^α for x ≥ x_m (Plato's straggler model); values
    above ``cap`` are set to ``cap``.
    """

    shape: float
    scale: float
    cap: float | None = None
    name = "pareto"

    def sample(self, rng: np.random.Generator) -> float:
        """Draw x_m · (1 + Lomax(α)), capped."""
        value = self.scale * (1.0 + float(rng.pareto(self.shape)))
        return value if self.cap is None else min(value, self.cap)

    @property
    def mean(self) -> float:
        """Return α·x_m/(α − 1) (uncapped), inf for α ≤ 1."""
        if self.shape <= 1:
            return math.inf if self.cap is None else self.cap
        return self.shape * self.scale / (self.shape - 1)


DISTRIBUTION_PARAMETERS: dict[str, dict[str, bool]] = {
    "constant": {"value": True},
    "uniform": {"low": True, "high": True},
    "exponential": {"mean": True},
    "lognormal": {"mean": True, "sigma": True},
    "pareto": {"shape": True, "scale": True, "cap": False},
}
"""For each distribution name, its parameters and whether each is required."""


def make_distribution(name: str, **params: float | None) -> Distribution:
    """Build a distribution from its YAML name and parameters."""
    if name == "constant":
        return ConstantDistribution(float(params["value"]))  # type: ignore[arg-type]
    if name == "uniform":
        return UniformDistribution(float(params["low"]), float(params["high"]))  # type: ignore[arg-type]
    if name == "exponential":
        return ExponentialDistribution(float(params["mean"]))  # type: ignore[arg-type]
    if name == "lognormal":
        return LogNormalDistribution(float(params["mean"]), float(params["sigma"]))  # type: ignore[arg-type]
    if name == "pareto":
        cap = params.get("cap")
        return ParetoDistribution(
            float(params["shape"]),  # type: ignore[arg-type]
            float(params["scale"]),  # type: ignore[arg-type]
            None if cap is None else float(cap),
        )
    raise ValueError(
        f"unknown distribution '{name}'; accepted: {', '.join(DISTRIBUTION_PARAMETERS)}"
    )


@dataclass
class DelayModel:
    """Samples per-client speeds, per-task jitter and communication time.

    Parameters
    ----------
    speed : Distribution
        Seconds per training example; one draw per client for the whole run.
    jitter : float
        σ of the mean-1 lognormal factor drawn for every task (0 = none).
    latency : float
        Seconds per message, each way.
    bandwidth : float
        Bytes per second, each way (``inf`` = free transfer).
    seed : int
        Seed of every draw.
    """

    speed: Distribution
    jitter: float = 0.0
    latency: float = 0.0
    bandwidth: float = math.inf
    seed: int = 0
    _speeds: dict[int, float] = field(default_factory=dict, repr=False)

    def client_speed(self, client_id: int) -> float:
        """Seconds per example of ``client_id`` (drawn once, then cached)."""
        if client_id not in self._speeds:
            rng = np.random.default_rng([self.seed, 1, client_id])
            self._speeds[client_id] = self.speed.sample(rng)
        return self._speeds[client_id]

    def jitter_factor(self, client_id: int, task_index: int) -> float:
        """Mean-1 lognormal factor of the ``task_index``-th task of a client."""
        if self.jitter <= 0:
            return 1.0
        rng = np.random.default_rng([self.seed, 2, client_id, task_index])
        return float(rng.lognormal(-self.jitter**2 / 2, self.jitter))

    def compute_time(
        self, client_id: int, task_index: int, num_examples: int, epochs: float
    ) -> float:
        """Virtual seconds of local training."""
        return (
            self.client_speed(client_id)
            * num_examples
            * epochs
            * self.jitter_factor(client_id, task_index)
        )

    def communication_time(self, bytes_down: int, bytes_up: int) -> float:
        """Virtual seconds to send the model down and the update up."""
        return 2 * self.latency + (bytes_down + bytes_up) / self.bandwidth
