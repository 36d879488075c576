"""Events of the loop that are not deliveries: a client coming online, a strategy's timer.

With an availability model (:mod:`fedstale.availability`) the free slots
may find no online client; :func:`next_wakeup` says when the first idle
client that may train comes online. A strategy may also ask to act at a
time (:meth:`~fedstale.strategies.hooks.StrategyHooks.next_timer`: FedBuff's
``aggregation_delay`` flushes a buffer that has waited long enough). The
loop moves the clock to the earlier of the two (:func:`wake`) when no
delivery can come first (:meth:`~fedstale.simulation.clock.Clock.reached`),
so virtual time never stalls and nothing is slept away.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.serverapp import Grid

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


def wake(strategy: AsyncStrategy, grid: Grid, num_rounds: int, max_virtual_time: float | None) -> bool:
    """Move the clock to the next event that is not a delivery if it comes first; say if it did.

    The event (:func:`next_wakeup`): a client coming online while a slot is
    free, or the strategy's timer (``next_timer``; a new version?).
    """
    # pylint: disable=protected-access
    at, timer = next_wakeup(strategy)
    if math.isinf(at) or not strategy.clock.reached(at, strategy.inflight):
        return False
    if strategy._passes_budget(at, max_virtual_time):
        return True
    strategy.clock.move_to(at)
    new_model = strategy.on_timer(strategy.model) if timer else None
    if new_model is not None:
        strategy.global_model.advance(new_model, strategy.clock.now)
        strategy.snapshots.drop_unused(strategy.version)
        strategy._after_new_version(grid, num_rounds)
    return True
