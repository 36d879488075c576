"""How long the strategy waits between two pulls that brought nothing back.

Flower's :class:`~flwr.serverapp.Grid` has no blocking pull:
``Grid.pull_messages`` returns what has arrived, and the caller polls
(Flower's own ``Grid.send_and_receive`` sleeps 3 s between pulls). fedstale's
event loop wants a reply soon after it lands, since on the virtual clock the
next tasks wait for it, but every pull costs CPU: a gRPC call and a database
query on a deployed SuperLink, a state query on the simulation engine, and in
both the ServerApp's own work, on a small machine taken from the cores the
ClientApps train on. Polling every 5 ms while a deployed task ran for
seconds cost its SuperLink ~3x the CPU of the rest of its run.

:class:`Poll` waits ``interval`` (``comm.poll_interval``) after the first
empty pull and twice as long after each further one, up to ``ceiling``
(``comm.max_poll_interval``); a pull that brings anything back starts again
from ``interval``. A reply is therefore noticed at most ``ceiling`` after it
lands, and a wait of ``T`` seconds takes about ``T / ceiling`` pulls instead
of ``T / interval``. The auto ceiling (``comm.max_poll_interval: 0``) is
:data:`ENGINE_CEILING` on Flower's simulation engine, which hands a node its
next message only every 0.1 s anyway, and :data:`SUPERLINK_CEILING` on any
other Grid (a deployed SuperLink, whose SuperNodes themselves poll every
0.5 s or more). Waiting never changes what is trained or merged, only when.
"""

from __future__ import annotations

import time

from .batches import FEED_INTERVAL, on_simulation_engine

ENGINE_CEILING = FEED_INTERVAL / 5
"""Longest wait between pulls on Flower's simulation engine (its ``InMemoryGrid``)."""

SUPERLINK_CEILING = 0.1
"""Longest wait between pulls on any other Grid (a deployed SuperLink)."""


def poll_ceiling(grid: object, ceiling: float = 0.0) -> float:
    """``ceiling`` if > 0, else the auto ceiling for ``grid`` (see the module docstring)."""
    if ceiling > 0:
        return ceiling
    return ENGINE_CEILING if on_simulation_engine(grid) else SUPERLINK_CEILING


class Poll:
    """Waits between empty pulls: ``interval``, doubling up to ``ceiling``.

    Parameters
    ----------
    interval : float (default: 0.005)
        The first wait after a pull that brought something (wall seconds).
    ceiling : float (default: :data:`SUPERLINK_CEILING`)
        The longest wait (raised to ``interval`` if smaller).

    Attributes
    ----------
    waits : int
        How many times :meth:`wait` slept.
    """

    def __init__(self, interval: float = 0.005, ceiling: float = SUPERLINK_CEILING) -> None:
        self.interval = interval
        self.ceiling = max(ceiling, interval)
        self.next = interval
        self.waits = 0

    def wait(self) -> None:
        """Sleep after a pull that brought nothing, and lengthen the next sleep."""
        time.sleep(self.next)
        self.waits += 1
        self.next = min(self.ceiling, self.next * 2)

    def reset(self) -> None:
        """Something arrived: the next wait is ``interval`` again."""
        self.next = self.interval
