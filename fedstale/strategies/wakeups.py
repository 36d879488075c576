"""Events of the loop that are not deliveries: a client coming online while a slot is free.

With an availability model (:mod:`fedstale.availability`) the
free slots may find no online client. :func:`next_wakeup` says when the
first idle client that may train comes online; the loop moves the clock
there (``EventLoop._wake``) when no delivery can come first
(:meth:`~fedstale.simulation.clock.Clock.reached`), so virtual time never
stalls and nothing is slept away.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import AsyncStrategy


def next_wakeup(strategy: AsyncStrategy) -> float:
    """The time of the next event that is not a delivery (inf: none)."""
    if strategy.inflight.free_slots(strategy.mode, strategy.concurrency) <= 0:
        return math.inf
    return strategy.pool.next_online(strategy.clock.now)
