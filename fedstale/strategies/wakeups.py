"""Events of the loop that are not deliveries: a client coming online, a strategy's timer.

With an availability model (:mod:`fedstale.availability`) the free slots
may find no online client; :func:`next_wakeup` says when the first idle
client that may train comes online. A strategy may also ask to act at a
time (:meth:`~fedstale.strategies.hooks.StrategyHooks.next_timer`: FedBuff's
``aggregation_delay`` flushes a buffer that has waited long enough). The
loop moves the clock to the earlier of the two (``EventLoop._wake``) when no
delivery can come first (:meth:`~fedstale.simulation.clock.Clock.reached`),
so virtual time never stalls and nothing is slept away.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import AsyncStrategy


def next_wakeup(strategy: AsyncStrategy) -> tuple[float, bool]:
    """The time of the next event that is not a delivery (inf: none), and whether it is the timer.

    The strategy's timer goes first when both fall at the same time.
    """
    timer = strategy.next_timer()
    online = math.inf
    if strategy.inflight.free_slots(strategy.mode, strategy.concurrency) > 0:
        online = strategy.pool.next_online(strategy.clock.now)
    return (timer, True) if timer <= online else (online, False)
