"""What every availability model answers: is a client online, and until when.

A model gives each client a sequence of online intervals [start, end) on
the run's virtual clock (seconds). The loop asks three questions of it:
whether an idle client is online now (only online clients are dispatched),
when a client that starts a task now goes offline (the task is lost if it
would finish later), and when an offline client comes back (the clock jumps
there when nothing else happens first).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator


class Availability(ABC):
    """Online intervals per client; everything else is offline."""

    name: str = ""

    @abstractmethod
    def intervals(self, client: int) -> Iterator[tuple[float, float]]:
        """The client's online intervals [start, end), in time order, disjoint."""

    def _interval_at_or_after(self, client: int, time: float) -> tuple[float, float] | None:
        """The first online interval that ends after ``time`` (None: none left)."""
        for start, end in self.intervals(client):
            if end > time:
                return start, end
        return None

    def is_online(self, client: int, time: float) -> bool:
        """Whether ``client`` is online at ``time``."""
        interval = self._interval_at_or_after(client, time)
        return interval is not None and interval[0] <= time

    def offline_after(self, client: int, time: float) -> float:
        """When ``client``, online at ``time``, goes offline (inf: never; ``time`` if offline now)."""
        interval = self._interval_at_or_after(client, time)
        if interval is None or interval[0] > time:
            return time
        return interval[1]

    def next_online(self, client: int, time: float) -> float:
        """The earliest time ≥ ``time`` at which ``client`` is online (inf: never again)."""
        interval = self._interval_at_or_after(client, time)
        if interval is None:
            return math.inf
        return max(interval[0], time)

    def describe(self) -> str:
        """The model with its parameters, for logs."""
        return self.name
