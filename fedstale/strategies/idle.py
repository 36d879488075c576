"""The idle clients of a population ``0 .. N-1`` as a sorted sequence, without listing them.

With a million clients, ``sorted(clients - busy - ...)`` at every dispatch
costs O(N log N) time and O(N) memory. :class:`IdleClients` is the same
sorted sequence computed from the few clients that are *not* idle (busy,
left out, backing off: about the concurrency), so indexing it costs
O(log C) and building it O(C log C). A selection policy that only indexes
its ``idle`` argument (``random``) receives it as is; the others get a list.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence


class IdleClients(Sequence[int]):
    """``sorted(set(range(population)) - set(unavailable))``, indexed lazily.

    Parameters
    ----------
    population : int
        The clients are ``0 .. population - 1``.
    unavailable : Iterable[int]
        Clients that are not idle (ids outside the population are ignored).
    """

    def __init__(self, population: int, unavailable: Iterable[int]) -> None:
        self.population = population
        self._gone = sorted({c for c in unavailable if 0 <= c < population})
        # The m-th unavailable id has gone[m] - m idle ids below it (non-decreasing).
        self._below = [g - m for m, g in enumerate(self._gone)]

    def __len__(self) -> int:
        return self.population - len(self._gone)

    def __getitem__(self, index: int) -> int:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("IdleClients does not slice; use list(idle)[...]")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        # The index-th idle id skips every unavailable id with at most ``index`` idle ids below it.
        return index + bisect_right(self._below, index)

    def __iter__(self) -> Iterator[int]:
        gone = iter(self._gone + [self.population])
        skip = next(gone)
        for client in range(self.population):
            if client == skip:
                skip = next(gone)
                continue
            yield client
