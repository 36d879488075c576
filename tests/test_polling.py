"""The wait between pulls that brought nothing (:mod:`fedstale.strategies.polling`)."""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, ConfigRecord
from flwr.superlink.grid import InMemoryGrid

from fedstale.simulation.local_grid import LocalGrid
from fedstale.strategies import polling
from fedstale.strategies.placement import ACTION_KEY, query
from fedstale.strategies.polling import ENGINE_CEILING, SUPERLINK_CEILING, Poll, poll_ceiling
from tests.test_placement import _answering_app


def test_waits_double_up_to_the_ceiling_and_start_again_after_a_reply(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(polling.time, "sleep", slept.append)
    poll = Poll(0.005, 0.02)
    for _ in range(5):
        poll.wait()
    poll.reset()
    poll.wait()
    assert slept == [0.005, 0.01, 0.02, 0.02, 0.02, 0.005]
    assert poll.waits == 6


def test_a_ceiling_below_the_interval_is_the_interval(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(polling.time, "sleep", slept.append)
    poll = Poll(0.05, 0.01)
    poll.wait()
    poll.wait()
    assert slept == [0.05, 0.05]


def test_auto_ceiling_is_a_fifth_of_the_engines_feed_on_the_engine_else_the_superlinks():
    engine = object.__new__(InMemoryGrid)  # only its type matters here
    assert poll_ceiling(engine) == ENGINE_CEILING == 0.02
    assert poll_ceiling(LocalGrid(_answering_app({0: 0}), num_nodes=1)) == SUPERLINK_CEILING == 0.1
    assert poll_ceiling(None) == 0.1
    assert poll_ceiling(engine, 0.5) == 0.5


class SlowGrid(LocalGrid):
    """Its replies land ``delay`` wall seconds after the push; counts the pulls."""

    def __init__(self, *args, delay: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay, self.pulls, self._pushed_at = delay, 0, 0.0

    def push_messages(self, messages):
        self._pushed_at = time.monotonic()
        return super().push_messages(messages)

    def pull_messages(self, message_ids):
        self.pulls += 1
        if time.monotonic() - self._pushed_at < self.delay:
            return []
        return super().pull_messages(message_ids)


def test_a_slow_reply_is_waited_for_with_few_pulls():
    """A reply 0.4 s away: with waits doubling from 5 ms to 20 ms at most it
    takes at most 3 pulls to reach the ceiling, then one per 20 ms (~23 in
    all; 80 at a constant 5 ms), and the answer is the reply's."""
    grid = SlowGrid(_answering_app({0: 4}), num_nodes=1, delay=0.4)
    (node,) = grid.get_node_ids()
    answers = query(grid, {node: ConfigRecord({ACTION_KEY: "describe"})}, timeout=30.0, ttl=60.0,
                    poll=Poll(0.005, 0.02))
    assert answers[node]["partition-id"] == 4
    assert 2 <= grid.pulls <= 0.4 / 0.02 + 5


def test_the_transport_starts_its_waits_again_when_a_pull_brings_replies(monkeypatch):
    from fedstale.strategies.placement import Placement
    from fedstale.strategies.transport import Transport
    from fedstale.strategies.evaluator import EvalJob

    monkeypatch.setattr(polling.time, "sleep", lambda seconds: None)
    grid = LocalGrid(_answering_app({0: 0}), num_nodes=1)
    nodes = list(grid.get_node_ids())
    poll = Poll(0.005, 0.08)
    transport = Transport(nodes, max_per_node=1, window=None, timeout=60.0, poll=poll)
    for _ in range(3):
        poll.wait()
    assert poll.next == 0.04
    assert transport.pull(grid) == [] and poll.next == 0.04  # nothing pushed, nothing back
    placement = Placement(nodes, num_clients=1, ttl=60.0)
    job = EvalJob(message=placement.message(0, "query", ArrayRecord(), ConfigRecord({ACTION_KEY: "describe"}), 0),
                  node_id=nodes[0], client_id=0)
    transport.enqueue(job)
    transport.push(grid)
    assert len(transport.pull(grid)) == 1
    assert poll.next == 0.005
