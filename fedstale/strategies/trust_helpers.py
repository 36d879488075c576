"""How trust enters aggregation: quarantine, weights and scores (trust optional).

The strategies call these through :class:`~fedstale.strategies.hooks.StrategyHooks`
(``_set_aside_quarantined``, ``_trust_weight``, ``_score``); each does
nothing, or weighs every client fully, when trust is off (``trust`` None).
See :mod:`fedstale.aggregation.trust` for the tracker itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..aggregation.trust import TrustTracker, agreement_score, reference_statistics
from .task import ClientUpdate


def set_aside_quarantined(
    trust: TrustTracker | None, updates: list[ClientUpdate]
) -> tuple[list[ClientUpdate], list[ClientUpdate]]:
    """Split updates into (merged, quarantined); the latter are rejected, saying why."""
    if trust is None:
        return list(updates), []
    active, held = [], []
    for update in updates:
        client = update.task.client_id
        if trust.is_quarantined(client):
            update.reject(f"quarantined (trust {trust.trust(client):.3f})")
            held.append(update)
        else:
            active.append(update)
    return active, held


def trust_weight(trust: TrustTracker | None, update: ClientUpdate) -> float:
    """The update's client's trust (0 in quarantine; 1 when trust is off)."""
    return 1.0 if trust is None else trust.weight(update.task.client_id)


def score(
    trust: TrustTracker | None, updates: Iterable[ClientUpdate], reference_deltas: torch.Tensor
) -> None:
    """Fold each update's agreement with the reference set into its client's trust.

    r, ν and c̃ come from ``reference_deltas`` [m, d]
    (:func:`fedstale.aggregation.trust.reference_statistics`).
    """
    if trust is None:
        return
    reference, typical_norm, typical_cosine = reference_statistics(reference_deltas)
    for update in updates:
        value = agreement_score(update.delta, reference, typical_norm, typical_cosine)
        trust.observe(update.task.client_id, value)


def trust_cell(trust: TrustTracker | None, client_id: int) -> float | str:
    """The client's trust as a CSV cell (empty when trust is off)."""
    return "" if trust is None else trust.trust(client_id)
