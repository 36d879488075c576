"""Per-client trust scores with soft quarantine.

Every update a client sends is scored against a reference set of deltas
(FedBuff and sync FedAvg: the updates merged in the same server step;
FedAsync: the last ``trust.window`` accepted deltas), whatever reducer merges
the updates (a mean would let one boosted attacker turn the reference against
every honest client). From the reference set: r, its coordinate-wise median;
ν, the median of its norms; c̃, the median of cos(Δ_j, r) over its members
(how much a typical update agrees with r; floored at 1e-3). Then

    score = clip(cos(Δ, r) / c̃, 0, 1) · min(1, ν / ‖Δ‖)

An update that points away from r scores 0 (sign flipping, IPM) and one no
more aligned than random noise close to 0; an update as aligned as a typical
one scores 1, whatever the data skew makes "typical" (with non-IID clients
honest cosines are well below 1, so a raw cosine would push honest clients
into quarantine); one much longer than usual is scaled down (boosted or
scaled updates, model replacement). The client's trust is smoothed over its
updates,

    T ← λ·T + (1 − λ)·score,    T = 1 before its first update,

and aggregation weights are multiplied by T. A client whose trust falls below
``quarantine_below`` is quarantined: its updates are still scored but not
merged, until its trust climbs back to ``recover_above`` (hysteresis, so a
borderline client does not flap in and out).
"""

from __future__ import annotations

import torch

from .reducers import Median

MIN_TYPICAL_COSINE = 1e-3
"""Floor of c̃, so a reference set that barely agrees with its own median
does not divide by ~0."""


def cosine(delta: torch.Tensor, reference: torch.Tensor) -> float:
    """cos(Δ, r) in float64; 0 when either is the zero vector."""
    norm = float(delta.double().norm())
    ref_norm = float(reference.double().norm())
    if norm == 0.0 or ref_norm == 0.0:
        return 0.0
    return float(delta.double() @ reference.double()) / (norm * ref_norm)


def agreement_score(
    delta: torch.Tensor, reference: torch.Tensor, typical_norm: float, typical_cosine: float = 1.0
) -> float:
    """clip(cos(Δ, r) / c̃, 0, 1) · min(1, ν / ‖Δ‖), in [0, 1]."""
    norm = float(delta.double().norm())
    if norm == 0.0:
        return 0.0
    relative = cosine(delta, reference) / max(typical_cosine, MIN_TYPICAL_COSINE)
    return min(1.0, max(0.0, relative)) * min(1.0, typical_norm / norm)


def reference_statistics(reference_deltas: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(r, ν, c̃) of a reference set [m, d]: median, median norm, median cosine to r."""
    reference = Median().reduce(reference_deltas, torch.ones(len(reference_deltas)))
    typical_norm = float(reference_deltas.double().norm(dim=1).median())
    cosines = torch.tensor([cosine(row, reference) for row in reference_deltas])
    return reference, typical_norm, float(cosines.median())


class TrustTracker:
    """Smoothed trust per client and the quarantine decision.

    Parameters
    ----------
    smoothing : float
        λ in [0, 1): weight of the past in T ← λ·T + (1 − λ)·score.
    quarantine_below : float
        Trust under which a client is quarantined.
    recover_above : float
        Trust at which a quarantined client is released (≥ ``quarantine_below``).
    """

    run_state_attributes = ("_trust", "_quarantined")
    """What :func:`fedstale.component_state.capture` saves (what :meth:`reset` clears)."""

    def __init__(
        self, smoothing: float = 0.5, quarantine_below: float = 0.2, recover_above: float = 0.4
    ) -> None:
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if recover_above < quarantine_below:
            raise ValueError(
                f"recover_above ({recover_above}) must be >= quarantine_below ({quarantine_below})"
            )
        self.smoothing = smoothing
        self.quarantine_below = quarantine_below
        self.recover_above = recover_above
        self._trust: dict[int, float] = {}
        self._quarantined: set[int] = set()

    def reset(self) -> None:
        """Forget every client (a new run)."""
        self._trust.clear()
        self._quarantined.clear()

    def trust(self, client_id: int) -> float:
        """T of ``client_id`` (1 before its first scored update)."""
        return self._trust.get(client_id, 1.0)

    def is_quarantined(self, client_id: int) -> bool:
        """Whether the client's updates are currently left out."""
        return client_id in self._quarantined

    def weight(self, client_id: int) -> float:
        """Multiplier of the client's aggregation weight: T, or 0 in quarantine."""
        return 0.0 if self.is_quarantined(client_id) else self.trust(client_id)

    @property
    def quarantined(self) -> set[int]:
        """Clients in quarantine now."""
        return set(self._quarantined)

    def observe(self, client_id: int, score: float) -> None:
        """Fold one update's score into the client's trust; update quarantine."""
        value = self.smoothing * self.trust(client_id) + (1 - self.smoothing) * score
        self._trust[client_id] = value
        if value < self.quarantine_below:
            self._quarantined.add(client_id)
        elif value >= self.recover_above:
            self._quarantined.discard(client_id)
