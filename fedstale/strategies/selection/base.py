"""What the selection policies share: reset, and their state across a resume."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pool import ClientPool


class Policy:
    """A selection policy whose run state is the attributes in ``run_state_attributes``.

    Subclasses set :attr:`name`, implement :meth:`choose` and, if they keep
    state across calls, :meth:`reset` and ``run_state_attributes`` (saved in
    resume points, so a resumed run chooses as the uninterrupted one).
    A subclass that only indexes, ranks or splits ``idle``
    (:func:`~fedstale.strategies.idle.split_idle`) sets ``lazy_idle = True``
    to be given the idle clients without their being listed.

    Parameters
    ----------
    seed : int (default: 0)
        The run's seed (policies that draw at random use it).
    """

    name = ""
    run_state_attributes: tuple[str, ...] = ()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Start a new run (nothing to forget by default)."""

    def choose(self, idle: list[int], count: int, pool: ClientPool) -> list[int]:
        """Pick ``count`` distinct clients among ``idle`` (sorted, ``count <= len(idle)``)."""
        raise NotImplementedError

    def run_state(self) -> Any:
        """Copies of the attributes named in ``run_state_attributes``."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.run_state_attributes}

    def load_run_state(self, state: Any) -> None:
        """Put back what :meth:`run_state` returned."""
        for name, value in state.items():
            setattr(self, name, copy.deepcopy(value))
