"""Client → SuperNode, computed: client ``c`` lives on ``nodes[c % len(nodes)]``.

A dict of a million entries costs ~75 bytes a client; this mapping costs
nothing per client and reads the same (``node_map[c]``, ``len``, iteration,
equality with a dict).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence


class NodeMap(Mapping[int, int]):
    """The SuperNode id of each client ``0 .. num_clients - 1`` (empty without nodes).

    Parameters
    ----------
    nodes : Sequence[int]
        The SuperNodes' ids, in placement order.
    num_clients : int
        Size of the population.
    """

    def __init__(self, nodes: Sequence[int], num_clients: int) -> None:
        self.nodes = list(nodes)
        self.num_clients = num_clients if self.nodes else 0

    def __getitem__(self, client_id: int) -> int:
        try:
            index = operator.index(client_id)
        except TypeError:
            raise KeyError(client_id) from None
        if not 0 <= index < self.num_clients:
            raise KeyError(client_id)
        return self.nodes[index % len(self.nodes)]

    def __len__(self) -> int:
        return self.num_clients

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.num_clients))

    def clients_on(self, node: int) -> list[int]:
        """The clients of ``node``, in order (every ``len(nodes)``-th from its position)."""
        if node not in self.nodes:
            return []
        return list(range(self.nodes.index(node), self.num_clients, len(self.nodes)))
