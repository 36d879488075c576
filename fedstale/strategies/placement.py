"""Which SuperNode hosts each client: discovery at start and message addressing.

At start the strategy asks every SuperNode (a QUERY with
``fedstale-action: describe``) for its ``partition-id``, orders the nodes by
it, and places client ``c`` on the ``c mod N``-th node for the whole run, so
per-client state kept in the node's ``Context`` stays with its client. A
second QUERY (``prepare``) tells each node its clients and returns their
training-set sizes, and whether the node's ClientApp accepts several tasks
in one message (``batch-tasks``, see :mod:`fedstale.batching`). A node whose
ClientApp does not answer these queries is still used, one task per
message; its clients' sizes are just unknown.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ..batching import CAPABILITY_KEY
from ..packing import CAPABILITY_KEY as PACKING_KEY
from ..progress import log_line
from .node_map import NodeMap
from .polling import Poll

ACTION_KEY = "fedstale-action"
"""ConfigRecord key of the start-up QUERY messages (``describe``/``prepare``)."""


class Placement:
    """The client → SuperNode map of a run, and what the clients reported.

    Parameters
    ----------
    nodes : list[int]
        The SuperNodes' ids, ordered by ``partition-id``.
    num_clients : int
        Size of the population; client ``c`` lives on ``nodes[c % len(nodes)]``.
    ttl : float
        Time-to-live of every message to a client, in seconds.
    """

    def __init__(self, nodes: list[int], num_clients: int, ttl: float) -> None:
        self.nodes = list(nodes)
        self.num_clients = num_clients
        self.ttl = ttl
        self.node_index = {node: i for i, node in enumerate(self.nodes)}
        """SuperNode id → its position (the ``node`` column of ``clients.csv``)."""
        self.node_of = NodeMap(self.nodes, num_clients)
        """Client id → the id of the SuperNode hosting it (computed, nothing stored per client)."""
        self.num_examples: dict[int, int] = {}
        """Client id → training-set size, for the clients whose node reported it."""
        self.batch_nodes: set[int] = set()
        """The SuperNodes whose ClientApp accepts ``train.batch`` messages."""
        self.packed_nodes: set[int] = set()
        """The SuperNodes whose ClientApp unpacks packed arrays (:mod:`fedstale.packing`)."""
        self.prepare_seconds: dict[int, float] = {}
        """SuperNode id → seconds its ClientApp spent preparing its clients (if it said)."""

    def clients_on(self, node: int) -> list[int]:
        """The clients hosted by ``node``, in order."""
        return self.node_of.clients_on(node)

    def message(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        client_id: int,
        message_type: str,
        arrays: ArrayRecord,
        config: ConfigRecord,
        version: int,
        extra: dict[str, Any] | None = None,
    ) -> Message:
        """A message to client ``client_id`` on its SuperNode, with a TTL.

        Its ConfigRecord is ``config`` plus ``client-id``, ``num-clients``,
        ``server-round`` (the model version) and ``extra``.
        """
        content = ConfigRecord(dict(config))
        content.update(
            {
                "client-id": client_id,
                "num-clients": self.num_clients,
                "server-round": version,
                **(extra or {}),
            }
        )
        return Message(
            RecordDict({"arrays": arrays, "config": content}),
            dst_node_id=self.node_of[client_id],
            message_type=message_type,
            ttl=self.ttl,
            group_id=str(version),
        )


def discover(  # pylint: disable=too-many-arguments
    grid: Grid,
    *,
    num_clients: int | None,
    train_config: ConfigRecord,
    timeout: float,
    ttl: float,
    poll: Poll,
) -> Placement:
    """Place the clients on the connected SuperNodes and learn their training-set sizes.

    Parameters
    ----------
    grid : Grid
        The ServerApp's Grid.
    num_clients : int | None
        Size of the population; None means one client per SuperNode.
    train_config : ConfigRecord
        Sent with the ``prepare`` query (the clients load their data with it).
    timeout : float
        Wall seconds to wait for a first SuperNode, and for the answers.
    ttl : float
        Time-to-live of the queries and of later messages.
    poll : Poll
        Waits between two pulls that brought nothing (:mod:`~fedstale.strategies.polling`).

    Returns
    -------
    Placement
        The run's client → node map.
    """
    started, started_at = time.monotonic(), time.time()
    node_ids = wait_for_nodes(grid, timeout)
    ask = {"timeout": timeout, "ttl": ttl, "poll": poll}
    described = query(grid, {n: ConfigRecord({ACTION_KEY: "describe"}) for n in node_ids}, **ask)

    def order(node_id: int) -> tuple[float, int]:
        reply = described.get(node_id)
        if reply is not None and "partition-id" in reply:
            return (float(reply["partition-id"]), node_id)  # type: ignore[arg-type]
        return (math.inf, node_id)

    nodes = sorted(node_ids, key=order)
    placement = Placement(nodes, num_clients or len(nodes), ttl)
    prepare = {}
    for node in nodes:
        content = ConfigRecord(dict(train_config))
        content[ACTION_KEY] = "prepare"
        content["client-ids"] = placement.clients_on(node)
        content["num-clients"] = placement.num_clients
        prepare[node] = content
    for node, reply in query(grid, prepare, **ask).items():
        if reply.get(CAPABILITY_KEY, False):
            placement.batch_nodes.add(node)
        if reply.get(PACKING_KEY, False):
            placement.packed_nodes.add(node)
        if "prepare-seconds" in reply:
            placement.prepare_seconds[node] = float(reply["prepare-seconds"])  # type: ignore[arg-type]
        ids = reply.get("client-ids", [])
        sizes = reply.get("num-examples", [])
        for client_id, size in zip(ids, sizes):  # type: ignore[arg-type]
            placement.num_examples[int(client_id)] = int(size)
    log_line(
        "start-up: SuperNodes found, described and prepared in %.2fs from Unix time %.3f "
        "(ClientApps preparing: %.2fs at most)",
        time.monotonic() - started,
        started_at,
        max(placement.prepare_seconds.values(), default=0.0),
    )
    log_line(
        "%d clients on %d SuperNodes; training-set sizes known for %d; %d nodes take batches, "
        "%d packed arrays",
        placement.num_clients,
        len(nodes),
        len(placement.num_examples),
        len(placement.batch_nodes),
        len(placement.packed_nodes),
    )
    return placement


def wait_for_nodes(grid: Grid, timeout: float) -> list[int]:
    """The connected SuperNodes' ids (sorted), once there is one.

    Raises
    ------
    RuntimeError
        If none connected within ``timeout`` wall seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if node_ids:
            return node_ids
        if time.monotonic() > deadline:
            raise RuntimeError("no SuperNode connected within the timeout")
        time.sleep(0.5)


def query(
    grid: Grid,
    contents: dict[int, ConfigRecord],
    *,
    timeout: float,
    ttl: float,
    poll: Poll,
) -> dict[int, ConfigRecord]:
    """Send one QUERY per node; return the ConfigRecord of each reply, by node.

    A node whose ClientApp does not answer fedstale's queries (an error
    reply), or not within ``timeout``, is simply absent from the result.
    """
    messages = [
        Message(
            RecordDict({"config": content}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
            ttl=ttl,
        )
        for node, content in contents.items()
    ]
    ids = [i for i in grid.push_messages(messages) if i]
    node_of = dict(zip(ids, contents))
    pending = set(ids)
    answers: dict[int, ConfigRecord] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        replies = list(grid.pull_messages(list(pending)))
        if replies:
            poll.reset()
        for reply in replies:
            pending.discard(reply.metadata.reply_to_message_id)
            node = node_of[reply.metadata.reply_to_message_id]
            if reply.has_content() and "config" in reply.content:
                answers[node] = reply.content["config"]
        if pending:
            poll.wait()
    return answers
