"""``fastest_first``: the clients whose last task took the least time first (time-aware)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..idle import unbooked_first
from .base import Policy

if TYPE_CHECKING:
    from ..pool import ClientPool


class FastestFirst(Policy):
    """Idle clients by the duration of their last intact reply, shortest first.

    The duration is the task's virtual time from dispatch to finish
    (:attr:`~fedstale.strategies.pool.ClientPool.last_duration`), so the
    choice is deterministic on the virtual clock. Clients never measured
    come first (lowest id first), so every client is tried once; after that
    slow clients train only when no faster one is idle. This is the
    time-to-accuracy end of the trade-off (stale-free but biased towards
    fast clients' data). Stateless; the seed is not used. Only the
    measured clients are sorted, so the cost grows with them, not with N.
    """

    name = "fastest_first"
    lazy_idle = True

    def choose(self, idle: Sequence[int], count: int, pool: ClientPool) -> list[int]:
        """Unmeasured clients by id, then measured ones by last duration (ties: lowest id)."""
        durations = pool.last_duration
        return unbooked_first(idle, durations, count, key=lambda c: (durations[c], c))
