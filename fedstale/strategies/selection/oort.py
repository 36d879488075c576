"""``oort``: Oort's utility-guided selection (Lai et al., OSDI 2021), as FedScale runs it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..idle import split_idle
from .base import Policy

if TYPE_CHECKING:
    from ..pool import ClientPool

CUTOFF = 0.95
"""Exploited clients are drawn among those with utility ≥ CUTOFF × the k-th highest (Oort's c)."""


class Oort(Policy):
    """Clients with the most useful data that are fast enough, plus ε-exploration.

    A client is *explored* once it has sent an intact reply with a loss. Its
    utility is Oort's statistical utility times its speed penalty:

        U_i = |B_i| · L_i · (T / t_i)^α    if t_i > T
        U_i = |B_i| · L_i                  otherwise

    with |B_i| the examples of its last reply, L_i its loss (Oort's
    √(mean of squared per-example losses): the reply's
    ``train-loss-squared`` when it reports it, else its mean ``train-loss``,
    a lower bound of it), t_i the virtual duration of its last task and T the
    preferred duration (``preferred_duration``; None: the median of the
    explored clients' last durations, which moves with the run as Oort's
    pacer does).

    For ``count`` picks, each is an exploration with probability ε (drawn
    in turn): ``count − e`` are exploited and ``e`` explored (falling back on
    the other kind when one has no candidate). Exploitation draws, without
    replacement and with probability ∝ U, among the explored idle clients
    whose utility is at least 0.95 × the (count − e)-th highest; exploration
    draws uniformly among the idle clients never explored. Draws use
    ``default_rng([seed, 4])``; the choice depends only on the seed and the
    books, so it is deterministic on the virtual clock. Oort's
    temporal-uncertainty bonus and its ε decay are left out. Only the
    explored clients are ranked; the unexplored ones are drawn by position,
    so a lazy ``idle`` is never listed.

    Parameters
    ----------
    seed : int (default: 0)
        The run's seed.
    epsilon : float (default: 0.1)
        ε in [0, 1], the share of picks that explore.
    alpha : float (default: 2.0)
        α ≥ 0 of the speed penalty (FedScale's ``round_penalty``).
    preferred_duration : float | None (default: None)
        T in seconds; None: the median last duration of explored clients.
    """

    name = "oort"
    lazy_idle = True

    def __init__(
        self,
        seed: int = 0,
        *,
        epsilon: float = 0.1,
        alpha: float = 2.0,
        preferred_duration: float | None = None,
    ) -> None:
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if preferred_duration is not None and preferred_duration <= 0:
            raise ValueError(f"preferred_duration must be > 0, got {preferred_duration}")
        self.epsilon, self.alpha, self.preferred_duration = epsilon, alpha, preferred_duration
        super().__init__(seed)

    def reset(self) -> None:
        """A fresh generator from the seed."""
        self.rng = np.random.default_rng([self.seed, 4])

    def run_state(self) -> Any:
        """The generator's state."""
        return self.rng.bit_generator.state

    def load_run_state(self, state: Any) -> None:
        """Put the generator's state back."""
        self.rng.bit_generator.state = state

    @staticmethod
    def explored(pool: ClientPool) -> set[int]:
        """Clients with a loss, an example count and a duration in the books."""
        return {
            c for c, loss in pool.last_loss.items()
            if math.isfinite(loss) and c in pool.last_duration and c in pool.last_examples
        }

    def deadline(self, pool: ClientPool) -> float:
        """T: ``preferred_duration``, or the median last duration of explored clients."""
        if self.preferred_duration is not None:
            return self.preferred_duration
        durations = [pool.last_duration[c] for c in sorted(self.explored(pool))]
        return float(np.median(durations)) if durations else math.inf

    def utility(self, client: int, pool: ClientPool, deadline: float) -> float:
        """U_i = |B_i|·L_i, times (T/t_i)^α when t_i > T."""
        value = pool.last_examples[client] * pool.last_loss[client]
        duration = pool.last_duration[client]
        if duration > deadline:
            value *= (deadline / duration) ** self.alpha
        return float(value)

    def choose(self, idle: Sequence[int], count: int, pool: ClientPool) -> list[int]:
        """Exploited clients (by utility) first, then explored ones, in draw order."""
        explored, fresh = split_idle(idle, self.explored(pool))
        explore = int(np.sum(self.rng.random(count) < self.epsilon)) if self.epsilon > 0 else 0
        explore = min(max(explore, count - len(explored)), len(fresh))
        chosen = self._exploit(explored, count - explore, pool)
        if explore:
            # numpy draws positions from the population size alone, as for rng.choice(fresh, ...)
            chosen += [int(fresh[int(i)]) for i in self.rng.choice(len(fresh), size=explore, replace=False)]
        return chosen

    def _exploit(self, explored: list[int], count: int, pool: ClientPool) -> list[int]:
        """``count`` clients drawn ∝ utility among those above the cutoff."""
        if count <= 0:
            return []
        deadline = self.deadline(pool)
        utilities = {c: self.utility(c, pool, deadline) for c in explored}
        ranked = sorted(explored, key=lambda c: (-utilities[c], c))
        cutoff = CUTOFF * utilities[ranked[count - 1]]
        candidates = [c for c in ranked if utilities[c] >= cutoff]
        weights = np.array([utilities[c] for c in candidates], dtype=np.float64)
        enough = np.count_nonzero(weights > 0) >= count  # else uniform among the candidates
        probabilities = weights / weights.sum() if enough else None
        picks = self.rng.choice(len(candidates), size=count, replace=False, p=probabilities)
        return [candidates[int(i)] for i in picks]
