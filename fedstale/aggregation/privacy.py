"""Central (server-side) differential privacy for buffered and async aggregation.

DP-FedAvg (McMahan et al., ICLR 2018) on an asynchronous server: every client
update Δ_i is clipped to L2 norm C and Gaussian noise is added to each
aggregate that becomes a new model version,

    Δ̄ = (1/K) Σ_i w_i · clip_C(Δ_i)        (w_i ≤ 1: staleness × trust)
    Δ̃ = Δ̄ + N(0, σ² I),   σ = z · C / K

so one client's data changes Δ̄ by at most C/K (add or remove that client's
update) and each release is a Gaussian mechanism with noise multiplier z. K
is the number of updates in the aggregate: FedBuff's buffer, a synchronous
round, or 1 for FedAsync (whose noisy Δ̃ is then mixed in with α_t, a
post-processing step). σ is Flower's ``compute_stdv`` (the formula of its
``DifferentialPrivacy*FixedClipping`` wrappers).

Privacy is accounted with Flower's :class:`RdpAccountant`
(``flwr.supercore.privacy_accounting``, Rényi DP on Google's dp-accounting),
one composition per release, client-level, add-or-remove-one neighbours:

- ``sampling="none"`` (default): no amplification by sampling. Valid whatever
  decides which clients train (asynchronous selection follows completion
  times, not a random sample);
- ``sampling="poisson"``: each release is treated as a Poisson sample of K of
  the N clients (q = K/N), as DP-FedAvg does. Much smaller ε, but only an
  approximation for an asynchronous server: document it as such where used.

The noise comes from a seeded torch generator (not Flower's
``add_gaussian_noise_inplace``, which draws from NumPy's global RNG) so a run
is reproducible for a seed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from contextlib import contextmanager

import numpy as np
import torch
from flwr.supercore.differential_privacy import compute_stdv
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

SAMPLING_METHODS = {
    "none": SamplingMethod.NO_AMPLIFICATION,
    "poisson": SamplingMethod.POISSON,
}
"""``privacy.central.sampling`` → Flower's accounting model."""

NOISE_STREAM = 11
"""Second word of the noise generator's seed, ``[seed, 11]``."""


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """Hide dp-accounting's per-order warnings while it runs.

    With Poisson sampling it warns once for every Rényi order it cannot
    evaluate (and leaves that order out); a line per order per release
    would bury the run's log.
    """
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def clip_rows(deltas: torch.Tensor, clipping_norm: float) -> torch.Tensor:
    """Scale each row of ``deltas`` [n, d] to L2 norm at most ``clipping_norm``.

    Flower's FlatClip (``clip_inputs_inplace``) row by row: factor
    min(1, C/‖Δ_i‖), computed in float64.
    """
    norms = torch.linalg.vector_norm(deltas.to(torch.float64), dim=1)
    factors = torch.clamp(clipping_norm / norms.clamp_min(1e-12), max=1.0)
    return deltas * factors.to(deltas.dtype).unsqueeze(1)


class CentralGaussianMechanism:
    """Clip updates, noise aggregates, and account for the releases.

    Parameters
    ----------
    noise_multiplier : float
        z, the noise std in units of the sensitivity C/K.
    clipping_norm : float
        C, the L2 bound of each update.
    population_size : int
        N, the number of clients (the population the accountant samples from).
    delta : float
        δ at which ε is reported.
    sampling : str (default: "none")
        ``none`` or ``poisson``, see the module docstring.
    seed : int (default: 0)
        Seed of the noise.
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        noise_multiplier: float,
        clipping_norm: float,
        population_size: int,
        delta: float,
        sampling: str = "none",
        seed: int = 0,
    ) -> None:
        if noise_multiplier <= 0 or clipping_norm <= 0:
            raise ValueError(
                f"noise_multiplier and clipping_norm must be > 0, got "
                f"{noise_multiplier} and {clipping_norm}"
            )
        if sampling not in SAMPLING_METHODS:
            raise ValueError(
                f"sampling '{sampling}': accepted {', '.join(SAMPLING_METHODS)}"
            )
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.population_size = population_size
        self.delta = delta
        self.sampling = sampling
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Start a new run: fresh accountant and noise stream."""
        self.accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=self.delta,
                population_size=self.population_size,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SAMPLING_METHODS[self.sampling],
            )
        )
        self._pending: dict[int, int] = {}
        self._released: dict[int, int] = {}
        state = np.random.SeedSequence([self.seed, NOISE_STREAM]).generate_state(1)
        self._generator = torch.Generator().manual_seed(int(state[0]))

    def describe(self) -> str:
        """One line for the strategy summary."""
        return (
            f"central DP: clip C={self.clipping_norm:g}, noise z={self.noise_multiplier:g}"
            f" (σ = z·C/K), δ={self.delta:g}, sampling={self.sampling}"
        )

    def clip(self, deltas: torch.Tensor) -> torch.Tensor:
        """Each update [n, d] clipped to norm C."""
        return clip_rows(deltas, self.clipping_norm)

    def std(self, count: int) -> float:
        """σ = z·C/K of an aggregate of ``count`` updates."""
        return compute_stdv(self.noise_multiplier, self.clipping_norm, count)

    def release(self, mean: torch.Tensor, count: int) -> torch.Tensor:
        """``mean`` + N(0, σ²) with σ = z·C/count, accounted as one release."""
        if count < 1:
            raise ValueError(f"an aggregate needs at least one update, got {count}")
        noise = torch.randn(mean.shape, generator=self._generator, dtype=torch.float64)
        size = min(count, self.population_size)
        self._pending[size] = self._pending.get(size, 0) + 1
        self._released[size] = self._released.get(size, 0) + 1
        return (mean.to(torch.float64) + self.std(count) * noise).to(mean.dtype)

    def run_state(self) -> dict[str, Any]:
        """Releases so far (by aggregate size) and the noise stream (for resume).

        The accountant itself cannot be pickled (it holds a module); it is
        rebuilt by composing the same releases again.
        """
        return {"released": dict(self._released), "generator": self._generator.get_state()}

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Continue after the releases of ``state``, with its noise stream."""
        self.reset()
        self._released = dict(state["released"])
        self._pending = dict(state["released"])
        self._generator.set_state(state["generator"])

    def _compose_pending(self) -> None:
        """Compose the releases not yet accounted, one call per aggregate size.

        Composing each release as it happens costs ~30 ms (dp-accounting
        recomputes the RDP curve); composing n identical releases at once
        costs the same as one, and ε only needs them when it is read.
        """
        with _quiet_absl():
            for size, count in sorted(self._pending.items()):
                self.accountant.compose(
                    GaussianPrivacyEvent(
                        noise_multiplier=self.noise_multiplier,
                        sample_size=size,
                        population_size=self.population_size,
                    ),
                    count,
                )
        self._pending.clear()

    @property
    def num_releases(self) -> int:
        """Noisy aggregates released so far."""
        return self.accountant.num_releases + sum(self._pending.values())

    def epsilon(self) -> float | None:
        """ε at δ over all releases so far (None before the first)."""
        if self.num_releases == 0:
            return None
        self._compose_pending()
        with _quiet_absl():
            return float(self.accountant.get_epsilon(self.delta))
