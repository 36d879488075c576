"""``least_participated``: the clients sent the fewest tasks first (fairness)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Policy

if TYPE_CHECKING:
    from ..pool import ClientPool


class LeastParticipated(Policy):
    """Idle clients by the number of tasks they were sent, fewest first.

    Ranks by (participations, client id): every client gets its k-th task
    before any gets its (k + 1)-th, as far as idleness allows, which evens
    out participation when fast clients would otherwise be picked again and
    again. Failed tasks count (the client was sent them). Stateless; the
    seed is not used.
    """

    name = "least_participated"

    def choose(self, idle: list[int], count: int, pool: ClientPool) -> list[int]:
        """The ``count`` idle clients with the fewest participations (ties: lowest id)."""
        return sorted(idle, key=lambda c: (pool.participations(c), c))[:count]
