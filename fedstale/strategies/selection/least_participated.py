"""``least_participated``: the clients sent the fewest tasks first (fairness)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..idle import unbooked_first
from .base import Policy

if TYPE_CHECKING:
    from ..pool import ClientPool


class LeastParticipated(Policy):
    """Idle clients by the number of tasks they were sent, fewest first.

    Ranks by (participations, client id): every client gets its k-th task
    before any gets its (k + 1)-th, as far as idleness allows, which evens
    out participation when fast clients would otherwise be picked again and
    again. Failed tasks count (the client was sent them). Stateless; the
    seed is not used. Clients never sent a task rank first by id, so only
    the clients sent one are sorted (O(P log P) for P of them, whatever N).
    """

    name = "least_participated"
    lazy_idle = True

    def choose(self, idle: Sequence[int], count: int, pool: ClientPool) -> list[int]:
        """The ``count`` idle clients with the fewest participations (ties: lowest id)."""
        sent = [c for c, n in pool.task_index.items() if n > 0]
        return unbooked_first(idle, sent, count, key=lambda c: (pool.participations(c), c))
