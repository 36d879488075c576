"""The idle clients of a population ``0 .. N-1`` as a sorted sequence, without listing them.

With a million clients, ``sorted(clients - busy - ...)`` at every dispatch
costs O(N log N) time and O(N) memory. :class:`IdleClients` is the same
sorted sequence computed from the few clients that are *not* idle (busy,
left out, backing off: about the concurrency), so indexing it costs
O(log C) and building it O(C log C). Every built-in selection policy takes
it as is (their ``lazy_idle``): ``random`` only indexes it, ``round_robin``
starts at a :meth:`~IdleClients.rank`, and the policies that rank clients
by their books (``least_participated``, ``fastest_first``, ``oort``) split it
with :func:`split_idle` into the few clients in the books and the rest,
which keep their id order (:func:`unbooked_first` is the rule of the first
two). A policy of the user's gets a list.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence


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

    def __contains__(self, client: object) -> bool:
        """Whether ``client`` is idle, in O(log C)."""
        if not isinstance(client, int) or not 0 <= client < self.population:
            return False
        at = bisect_left(self._gone, client)
        return at == len(self._gone) or self._gone[at] != client

    def rank(self, client: int) -> int:
        """How many idle ids are below ``client`` (its position, if idle), in O(log C)."""
        client = min(max(client, 0), self.population)
        return client - bisect_left(self._gone, client)

    def without(self, clients: Iterable[int]) -> IdleClients:
        """These idle clients less ``clients``, still lazy (O((C + len(clients)) log))."""
        return IdleClients(self.population, [*self._gone, *clients])

    def __iter__(self) -> Iterator[int]:
        gone = iter(self._gone + [self.population])
        skip = next(gone)
        for client in range(self.population):
            if client == skip:
                skip = next(gone)
                continue
            yield client


def split_idle(idle: Sequence[int], books: Collection[int]) -> tuple[list[int], Sequence[int]]:
    """``idle`` (sorted) as the clients in ``books`` and the others, both sorted.

    For an :class:`IdleClients` this costs O(len(books) log C) and the
    second part stays lazy, so a policy that ranks the few clients it has
    books on never lists the population; for a list it is one pass.

    Returns
    -------
    tuple[list[int], Sequence[int]]
        The idle clients in ``books``, and the idle clients not in them.
    """
    if isinstance(idle, IdleClients):
        known = sorted(c for c in books if c in idle)
        return known, idle.without(known)
    return [c for c in idle if c in books], [c for c in idle if c not in books]


def unbooked_first(
    idle: Sequence[int], books: Collection[int], count: int, key: Callable[[int], object]
) -> list[int]:
    """The first ``count`` of: the idle clients not in ``books`` by id, then those in it by ``key``.

    ``sorted(idle, key=lambda c: (c in books, key(c) if c in books else 0, c))[:count]``
    without listing ``idle``: only the clients in ``books`` are sorted
    (the rule of ``least_participated`` and ``fastest_first``).
    """
    booked, unbooked = split_idle(idle, books)
    chosen = [int(unbooked[i]) for i in range(min(count, len(unbooked)))]
    return chosen + sorted(booked, key=key)[: count - len(chosen)]
