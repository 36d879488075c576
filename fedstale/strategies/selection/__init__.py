"""Client selection policies (``strategy.selection``), one class a file.

The pool (:class:`~fedstale.strategies.pool.ClientPool`) decides who *may*
train (idle, online, not left out, budget left, clients to retry first); a
policy decides who *does* among the others:

- ``random`` (:class:`RandomSelection`, the default): seeded uniform choice
- ``round_robin`` (:class:`RoundRobin`): in turn by client id
- ``least_participated`` (:class:`LeastParticipated`): fewest tasks first
- ``fastest_first`` (:class:`FastestFirst`): shortest last virtual duration first
- ``oort`` (:class:`Oort`): Oort's utility with a speed penalty and
  ε-exploration (Lai et al., OSDI 2021)

Policies read the pool's books (participations, last duration, loss and
examples) and keep their own state across a resume.
"""

from __future__ import annotations

from typing import Any

from .base import Policy
from .fastest_first import FastestFirst
from .least_participated import LeastParticipated
from .oort import Oort
from .random_choice import RandomSelection
from .round_robin import RoundRobin

SELECTION_POLICIES: dict[str, type] = {
    cls.name: cls for cls in (RandomSelection, RoundRobin, LeastParticipated, FastestFirst, Oort)
}
"""Registry keyed by the names used in YAML (``strategy.selection``)."""


def make_selection(name: str, seed: int, **oort: Any) -> Any:
    """The policy ``name`` seeded by ``seed``; ``oort`` holds Oort's parameters.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`SELECTION_POLICIES`.
    """
    if name not in SELECTION_POLICIES:
        raise ValueError(
            f"unknown selection policy '{name}'; accepted: {', '.join(SELECTION_POLICIES)}"
        )
    if name == "oort":
        return Oort(seed, **oort)
    return SELECTION_POLICIES[name](seed)


__all__ = [
    "SELECTION_POLICIES",
    "FastestFirst",
    "LeastParticipated",
    "Oort",
    "Policy",
    "RandomSelection",
    "RoundRobin",
    "make_selection",
]
