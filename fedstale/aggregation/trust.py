"""Per-client trust scores with soft quarantine.

Every update a client sends is scored against a robust reference direction r
(FedBuff and sync: the buffer's robust aggregate; FedAsync: the coordinate-wise
median of the recently accepted deltas):

    score = max(0, cos(Δ, r)) · min(1, ν / ‖Δ‖)

where ν is the median norm of the reference updates. An update that points
away from the reference scores 0 (sign flipping, noise, IPM), and one much
longer than usual is scaled down (boosted or scaled updates, model
replacement). The client's trust is smoothed over its updates,

    T ← λ·T + (1 − λ)·score,    T = 1 before its first update,

and aggregation weights are multiplied by T. A client whose trust falls below
``quarantine_below`` is quarantined: its updates are still scored but not
merged, until its trust climbs back to ``recover_above`` (hysteresis, so a
borderline client does not flap in and out).
"""

from __future__ import annotations

import torch


def agreement_score(delta: torch.Tensor, reference: torch.Tensor, typical_norm: float) -> float:
    """max(0, cos(Δ, r)) · min(1, ν / ‖Δ‖), in [0, 1]."""
    norm = float(delta.double().norm())
    ref_norm = float(reference.double().norm())
    if norm == 0.0 or ref_norm == 0.0:
        return 0.0
    cosine = float(delta.double() @ reference.double()) / (norm * ref_norm)
    return max(0.0, cosine) * min(1.0, typical_norm / norm)


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
