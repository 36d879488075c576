"""``round_robin``: clients in turn, by id (FLSim's round-robin selection)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..idle import IdleClients
from .base import Policy

if TYPE_CHECKING:
    from ..pool import ClientPool


class RoundRobin(Policy):
    """The idle clients that come next after a cursor, cyclically by id.

    With a population of N clients and cursor k, idle client c ranks by
    (c − k) mod N; the first ``count`` are chosen and the cursor moves past
    the last of them. Clients that are busy (or offline) when their turn
    comes are skipped and come first again once the cursor wraps around.
    The seed is not used. The choice starts at the cursor's rank among
    the idle clients (O(log C) on a lazy ``idle``), so it never lists them.
    """

    name = "round_robin"
    lazy_idle = True
    run_state_attributes = ("cursor",)

    def reset(self) -> None:
        """The cursor starts at client 0."""
        self.cursor = 0

    def choose(self, idle: Sequence[int], count: int, pool: ClientPool) -> list[int]:
        """The first ``count`` idle clients from the cursor on.

        ``idle`` is sorted, so ranking by (c − cursor) mod N is ``idle``
        rotated to start at the first id ≥ the cursor.
        """
        size = max(len(pool.clients), idle[-1] + 1)
        start = idle.rank(self.cursor) if isinstance(idle, IdleClients) else bisect_left(idle, self.cursor)
        chosen = [int(idle[(start + j) % len(idle)]) for j in range(count)]
        self.cursor = (chosen[-1] + 1) % size
        return chosen
