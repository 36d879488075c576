"""``round_robin``: clients in turn, by id (FLSim's round-robin selection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Policy

if TYPE_CHECKING:
    from ..pool import ClientPool


class RoundRobin(Policy):
    """The idle clients that come next after a cursor, cyclically by id.

    With a population of N clients and cursor k, idle client c ranks by
    (c − k) mod N; the first ``count`` are chosen and the cursor moves past
    the last of them. Clients that are busy (or offline) when their turn
    comes are skipped and come first again once the cursor wraps around.
    The seed is not used.
    """

    name = "round_robin"
    run_state_attributes = ("cursor",)

    def reset(self) -> None:
        """The cursor starts at client 0."""
        self.cursor = 0

    def choose(self, idle: list[int], count: int, pool: ClientPool) -> list[int]:
        """The first ``count`` idle clients from the cursor on."""
        size = max(len(pool.clients), max(idle) + 1)
        chosen = sorted(idle, key=lambda c: (c - self.cursor) % size)[:count]
        self.cursor = (chosen[-1] + 1) % size
        return chosen
