"""``always``: every client is online all the time (the default)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from .base import Availability


class AlwaysOnline(Availability):
    """One interval [0, ∞) per client: nothing is ever lost to availability."""

    name = "always"

    def intervals(self, client: int) -> Iterator[tuple[float, float]]:
        """[0, ∞)."""
        yield 0.0, math.inf

    def is_online(self, client: int, time: float) -> bool:
        """Always."""
        return True

    def offline_after(self, client: int, time: float) -> float:
        """Never."""
        return math.inf

    def next_online(self, client: int, time: float) -> float:
        """Now."""
        return time
