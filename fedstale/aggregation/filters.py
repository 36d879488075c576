"""Per-update checks for strategies that merge one update at a time.

FedAsync cannot take a median of one update, so each arriving update is
checked on its own before it is mixed in:

- :class:`NormBound`: reject Δ if ‖Δ‖ > κ · median(‖Δ_j‖) over the last
  ``window`` accepted updates (accept while fewer than 3 are known). Catches
  boosted and scaled updates and large noise.
- :class:`ValidationCheck` (in the spirit of Zeno++, Xie et al. 2020): the
  server holds a small validation set; reject the update if the model it
  would produce has a validation loss more than ε above the current model's.
  Catches updates that hurt the model whatever their norm (sign flipping,
  IPM), at the cost of one forward pass over the validation set per update.

Each check returns None to accept or the reason it rejects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

MIN_HISTORY = 3
"""Accepted norms needed before :class:`NormBound` rejects anything."""


class NormBound:
    """‖Δ‖ ≤ κ · median of recent accepted norms.

    Parameters
    ----------
    kappa : float
        κ > 0, how many times the typical norm an update may reach.
    window : int
        Recent accepted updates the median is taken over.
    """

    run_state_attributes = ("_norms",)
    """What :func:`fedstale.component_state.capture` saves (what :meth:`reset` clears)."""

    def __init__(self, kappa: float, window: int = 20) -> None:
        self.kappa = kappa
        self._norms: deque[float] = deque(maxlen=window)

    def reset(self) -> None:
        """Forget the history (a new run)."""
        self._norms.clear()

    def check(self, delta: torch.Tensor) -> str | None:
        """None if ‖Δ‖ is within the bound, else the reason."""
        if len(self._norms) < MIN_HISTORY:
            return None
        norm = float(delta.double().norm())
        bound = self.kappa * float(torch.tensor(list(self._norms)).median())
        if norm > bound:
            return f"norm {norm:.3g} > {self.kappa:g} x median {bound / self.kappa:.3g}"
        return None

    def accept(self, delta: torch.Tensor) -> None:
        """Remember the norm of an accepted update."""
        self._norms.append(float(delta.double().norm()))


class ValidationCheck:
    """L_val(x_new) ≤ L_val(x) + ε on the server's validation set.

    Parameters
    ----------
    tolerance : float
        ε ≥ 0.
    loss_fn : Callable[[torch.Tensor], float]
        Validation loss of a flat model vector.
    """

    def __init__(self, tolerance: float, loss_fn: Callable[[torch.Tensor], float]) -> None:
        self.tolerance = tolerance
        self.loss_fn = loss_fn

    def check(self, current: torch.Tensor, proposed: torch.Tensor) -> str | None:
        """None if ``proposed`` is not worse than ``current`` by more than ε."""
        before = self.loss_fn(current)
        after = self.loss_fn(proposed)
        if after > before + self.tolerance:
            return f"validation loss {after:.4f} > {before:.4f} + {self.tolerance:g}"
        return None
