"""``random``: a seeded uniform choice (the default, FLSim's random selection)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..pool import ClientPool


class RandomSelection:
    """A uniform choice without replacement, seeded by ``seed``.

    Parameters
    ----------
    seed : int
        The run's seed; the generator is ``default_rng([seed, 4])``.
    """

    name = "random"
    lazy_idle = True
    """``choose`` only indexes ``idle``: the pool may pass an :class:`~fedstale.strategies.idle.IdleClients`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """A fresh generator from the seed."""
        self.rng = np.random.default_rng([self.seed, 4])

    def choose(self, idle: Sequence[int], count: int, pool: ClientPool) -> list[int]:
        """``count`` clients drawn uniformly from ``idle``, in draw order.

        The positions are drawn as ``rng.choice(idle, ...)`` draws them (numpy
        picks positions from the population size alone), so indexing a lazy
        ``idle`` gives the same clients without building an array of it.
        """
        del pool
        return [int(idle[int(i)]) for i in self.rng.choice(len(idle), size=count, replace=False)]

    def run_state(self) -> Any:
        """The generator's state."""
        return self.rng.bit_generator.state

    def load_run_state(self, state: Any) -> None:
        """Put the generator's state back."""
        self.rng.bit_generator.state = state
