"""Placement: client c on the (c mod N)-th node by partition-id, the start-up queries, addressing."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedstale.simulation.local_grid import LocalGrid, _ensure_task_identity
from fedstale.strategies.placement import ACTION_KEY, Placement, discover, query
from fedstale.strategies.polling import Poll


def _answering_app(partition_of, sizes=None, silent=()):
    """A ClientApp that answers fedstale's QUERY messages (``silent`` nodes raise)."""

    def app(message: Message, context) -> Message:
        node = context.node_config["partition-id"]
        if node in silent:
            raise RuntimeError("not a fedstale ClientApp")
        config = message.content["config"]
        if config[ACTION_KEY] == "describe":
            answer = ConfigRecord({"partition-id": partition_of[node]})
        else:
            ids = list(config["client-ids"])
            answer = ConfigRecord({"client-ids": ids, "num-examples": [(sizes or {}).get(c, 10 + c) for c in ids]})
        return Message(RecordDict({"config": answer}), reply_to=message)

    return app


def _discover(grid, num_clients, **options):
    return discover(
        grid, num_clients=num_clients, train_config=ConfigRecord({"lr": 0.1}),
        timeout=5.0, ttl=60.0, poll=Poll(0.0, 0.0), **options,
    )


def test_clients_go_round_robin_over_nodes_ordered_by_partition_id():
    """3 nodes reporting partition-ids 2, 0, 1: the one that says 0 is node 0."""
    grid = LocalGrid(_answering_app({0: 2, 1: 0, 2: 1}), num_nodes=3, per_pull=3)
    nodes = grid.get_node_ids()  # in the grid's own order: partition-id 0, 1, 2 of node_config
    placement = _discover(grid, 7)
    assert placement.nodes == [nodes[1], nodes[2], nodes[0]]
    assert placement.node_index == {nodes[1]: 0, nodes[2]: 1, nodes[0]: 2}
    assert [placement.nodes.index(placement.node_of[c]) for c in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert placement.clients_on(nodes[1]) == [0, 3, 6]
    assert placement.num_examples == {c: 10 + c for c in range(7)}
    assert placement.num_clients == 7 and placement.ttl == 60.0


def test_one_client_per_node_by_default_and_silent_nodes_still_host_clients():
    """A node whose ClientApp does not answer goes last; its clients' sizes are unknown."""
    grid = LocalGrid(_answering_app({0: 0, 1: 1}, silent={0}), num_nodes=2, per_pull=2)
    nodes = grid.get_node_ids()
    placement = _discover(grid, None)
    assert placement.nodes == [nodes[1], nodes[0]]
    assert placement.num_clients == 2
    assert placement.num_examples == {0: 10}


def test_query_returns_each_answering_nodes_config():
    grid = LocalGrid(_answering_app({0: 5, 1: 6}), num_nodes=2)
    nodes = grid.get_node_ids()
    answers = query(
        grid, {n: ConfigRecord({ACTION_KEY: "describe"}) for n in nodes}, timeout=5.0, ttl=60.0, poll=Poll(0.0, 0.0)
    )
    assert {n: answers[n]["partition-id"] for n in answers} == {nodes[0]: 5, nodes[1]: 6}


def test_a_message_is_addressed_to_the_clients_node_with_its_ttl_and_ids():
    _ensure_task_identity()
    placement = Placement([101, 202], num_clients=5, ttl=30.0)
    arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    message = placement.message(3, MessageType.TRAIN, arrays, ConfigRecord({"lr": 0.5}), 7, {"task-id": 12})
    assert message.metadata.dst_node_id == 202
    assert message.metadata.ttl == 30.0
    assert message.metadata.group_id == "7"
    assert message.metadata.message_type == MessageType.TRAIN
    assert dict(message.content["config"]) == {
        "lr": 0.5, "client-id": 3, "num-clients": 5, "server-round": 7, "task-id": 12,
    }
    assert list(message.content["arrays"].keys()) == ["w"]


def test_an_empty_placement_places_nobody():
    placement = Placement([], num_clients=0, ttl=1.0)
    assert placement.node_of == {} and placement.node_index == {} and placement.num_examples == {}


def test_node_map_reads_like_the_dict_it_replaces():
    from fedstale.strategies.node_map import NodeMap

    nodes = [50, 7, 31]
    node_map = NodeMap(nodes, 8)
    assert node_map == {c: nodes[c % 3] for c in range(8)} and len(node_map) == 8
    assert node_map[np.int64(4)] == 7
    assert node_map.clients_on(31) == [2, 5] and node_map.clients_on(99) == []
    assert NodeMap([], 8) == {}
    with pytest.raises(KeyError):
        node_map[8]  # pylint: disable=pointless-statement
