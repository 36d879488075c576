"""Deterministic failures stop a run at its start; transient ones keep retrying.

Two bad inputs a new user met (the config checker accepts both, since only
the data can tell): ``data.num_clients=100 data.min_partition_size=5`` on
digits (flwr-datasets' Dirichlet sampling cannot reach the minimum) and
``data.num_clients=5000`` (more clients than the 1,437 training examples).
Both used to run, fail on every client and end with 0 versions; now the
ServerApp partitions before the run and stops with one error naming the
fields. A ClientApp that raises the same exception for every client stops
the run after ``comm.fail_fast`` clients (:mod:`fedstale.strategies.failfast`).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Error, Message

from fedstale.builders import build_strategy, check_data, run_strategy
from fedstale.client_app import app as fedstale_client_app
from fedstale.config import ConfigError
from fedstale.data import PartitionError, PartitionSpec
from fedstale.data.partition import partition_indices
from fedstale.simulation.local_grid import LocalGrid
from fedstale.strategies import MemoryRecorder, RunAborted
from fedstale.strategies.failfast import FailFast
from tests.helpers import config, run


def test_dirichlet_minimum_out_of_reach_stops_before_any_training():
    cfg = config(data__num_clients=100, data__min_partition_size=5)
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    text = str(caught.value)
    assert text.count("\n  - ") == 1  # one problem, one line
    assert (
        "data.partitioner 'dirichlet' could not give each of data.num_clients (100) clients "
        "at least data.min_partition_size (5) of 1437 examples with data.alpha (0.5)"
    ) in text
    assert text.endswith(
        "lower data.min_partition_size or data.num_clients, or raise data.alpha (more even label shares)"
    )


def test_more_clients_than_examples_stops_before_any_training():
    with pytest.raises(ConfigError) as caught:
        check_data(config(data__num_clients=5000))
    assert str(caught.value) == (
        "invalid configuration:\n  - data.num_clients (5000) is larger than the training pool "
        "(1437 examples): every client needs at least one example; set data.num_clients to at most 1437"
    )


def test_minimum_sizes_that_cannot_add_up_are_refused_without_sampling():
    labels = np.arange(100) % 10
    spec = PartitionSpec("dirichlet", num_partitions=20, min_partition_size=6)
    with pytest.raises(PartitionError, match=r"data.num_clients \(20\) x data.min_partition_size \(6\) "
                       r"is more than the training pool \(100 examples\); lower data.min_partition_size "
                       r"to at most 5 or data.num_clients to at most 16"):
        partition_indices(labels, spec)


def test_a_client_with_no_example_is_named():
    """Dirichlet with min_partition_size 0 can leave a client empty (client 146 of 300 here)."""
    cfg = config(data__num_clients=300, data__min_partition_size=0)
    with pytest.raises(ConfigError, match=r"leaves 1 of data.num_clients \(300\) clients with no "
                       r"example \(clients 146\); raise data.min_partition_size \(at least 1\)"):
        check_data(cfg)


def test_fairness_needs_two_examples_per_client():
    """evaluation.fairness holds out part of each client's examples: clients
    with one example (3 of 200 here, min_partition_size 1) stop the run."""
    cfg = config(data__num_clients=200, data__min_partition_size=1, evaluation__fairness=True)
    with pytest.raises(ConfigError) as err:
        check_data(cfg)
    assert err.value.problems == [
        "evaluation.fairness: 3 of data.num_clients (200) clients have fewer than 2 examples "
        "(clients 136, 145, 181), so none can be held out; raise data.min_partition_size to at "
        "least 2, lower data.num_clients, or turn evaluation.fairness off"
    ]
    check_data(config(data__num_clients=200, data__min_partition_size=1))  # without fairness: fine
    check_data(config(data__num_clients=200, data__min_partition_size=2, evaluation__fairness=True))


def test_a_feasible_partitioning_is_what_the_clients_get():
    """check_data computes the clients' own split (same cache, same indices)."""
    cfg = config(data__num_clients=100, data__min_partition_size=3, stop__num_updates=2)
    check_data(cfg)
    _, strategy, _ = run(cfg)
    sizes = strategy.placement.num_examples
    assert len(sizes) == 100 and min(sizes.values()) >= 3


# ----------------------------------------------------------------------
# FailFast on hand-made sequences
# ----------------------------------------------------------------------


def test_same_reason_from_threshold_clients_stops():
    watch = FailFast(3)
    watch.reset(num_clients=20)
    assert watch.on_failure(0, "boom", True) is None
    assert watch.on_failure(0, "boom", True) is None  # a retry of the same client counts once
    assert watch.on_failure(1, "boom", True) is None
    assert watch.on_failure(2, "boom", True) == "boom"
    assert watch.on_failure(3, "boom", True) is None  # said once


def test_threshold_is_capped_by_the_population():
    watch = FailFast(3)
    watch.reset(num_clients=2)
    assert watch.on_failure(0, "boom", True) is None
    assert watch.on_failure(1, "boom", True) == "boom"


@pytest.mark.parametrize(
    "events",
    [
        [("fail", 0, "boom", True), ("ok",), ("fail", 1, "boom", True), ("fail", 2, "boom", True)],
        [("fail", 0, "boom", True), ("fail", 1, "bang", True), ("fail", 2, "boom", True), ("fail", 3, "boom", True)],
    ],
    ids=["a success first", "two different reasons"],
)
def test_a_success_or_a_second_reason_ends_the_watch(events):
    watch = FailFast(3)
    watch.reset(num_clients=20)
    said = []
    for event in events:
        if event[0] == "ok":
            watch.on_success()
        else:
            said.append(watch.on_failure(*event[1:]))
    assert said == [None] * len(said) and not watch.watching


def test_transient_failures_are_not_counted_and_do_not_end_the_watch():
    watch = FailFast(3)
    watch.reset(num_clients=20)
    assert watch.on_failure(5, "no reply within 600s", False) is None
    assert watch.on_failure(0, "boom", True) is None
    assert watch.on_failure(6, "error reply (5): Node Unavailable", False) is None
    assert watch.on_failure(1, "boom", True) is None
    assert watch.on_failure(2, "boom", True) == "boom"


def test_zero_turns_the_check_off():
    watch = FailFast(0)
    watch.reset(num_clients=20)
    assert not watch.watching
    assert all(watch.on_failure(c, "boom", True) is None for c in range(20))


# ----------------------------------------------------------------------
# In the event loop
# ----------------------------------------------------------------------

# These ClientApps raise or answer errors per message, so each run sends
# one task per message (tests/test_batching.py has failures inside batches).
ONE_TASK_PER_MESSAGE = {"comm__tasks_per_message": 1}


def _raising_app(message, context):
    if message.metadata.message_type == "train":
        raise ValueError("The max number of attempts (10) was reached")
    return fedstale_client_app(message, context)


def test_every_client_raising_the_same_error_stops_the_run_with_it():
    """20 clients, C = 10, max_retries 2: without the check 60 failed tasks and
    0 versions; with it the run stops after the first 3 clients' failures."""
    cfg = config(stop__num_updates=20, **ONE_TASK_PER_MESSAGE)
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    with pytest.raises(RunAborted) as caught:
        run_strategy(strategy, LocalGrid(_raising_app, num_nodes=2), cfg)
    text = str(caught.value)
    assert text.startswith(
        "3 clients failed with the same error before any reply succeeded (a bug or bad input, "
        "not a flaky client; comm.fail_fast=0 retries them instead): error reply (2): "
        "ValueError: The max number of attempts (10) was reached"
    )
    assert len({r["client_id"] for r in recorder.updates}) == 3
    assert all(not r["accepted"] for r in recorder.updates)
    assert len(recorder.updates) <= 3 * (cfg.comm.max_retries + 1)
    # the rows written so far are kept, closed by a last metrics row
    assert recorder.evaluations[-1]["failures"] == len(recorder.updates)
    assert recorder.evaluations[-1]["version"] == 0


def test_fail_fast_zero_drains_the_clients_as_before():
    cfg = config(data__num_clients=4, strategy__concurrency=2, stop__num_updates=5, comm__fail_fast=0, **ONE_TASK_PER_MESSAGE)
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    run_strategy(strategy, LocalGrid(_raising_app, num_nodes=2), cfg)
    assert strategy.stop_reason == "every client was left out after failures"
    assert len(recorder.updates) == 4 * (cfg.comm.max_retries + 1)


def test_errors_that_name_their_client_are_not_one_error():
    """Different messages are not a pattern: the clients are retried and left out as before."""

    def app(message, context):
        if message.metadata.message_type == "train":
            raise RuntimeError(f"disk of client {message.content['config']['client-id']} is full")
        return fedstale_client_app(message, context)

    cfg = config(data__num_clients=4, strategy__concurrency=2, stop__num_updates=5, **ONE_TASK_PER_MESSAGE)
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    run_strategy(strategy, LocalGrid(app, num_nodes=2), cfg)
    assert strategy.stop_reason == "every client was left out after failures"


def test_a_node_that_is_down_at_the_start_keeps_retry_and_backoff():
    """Every client's first task is answered "Node Unavailable" (transient):
    the run retries each client once and reaches its budget."""
    failed: set[int] = set()

    def app(message, context):
        if message.metadata.message_type == "train":
            client = int(message.content["config"]["client-id"])
            if client not in failed:
                failed.add(client)
                return Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=message)
        return fedstale_client_app(message, context)

    cfg = config("fedasync", data__num_clients=6, strategy__concurrency=3, stop__num_updates=12, **ONE_TASK_PER_MESSAGE)
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    run_strategy(strategy, LocalGrid(app, num_nodes=2), cfg)
    failures = [r for r in recorder.updates if not r["accepted"]]
    assert {r["reason"] for r in failures} == {"error reply (5): Error: Node Unavailable"}
    assert len({r["client_id"] for r in failures}) >= 3
    assert recorder.evaluations[-1]["version"] == 12 and strategy.pool.excluded == set()


def test_a_client_that_fails_after_the_first_success_is_only_retried():
    """The check watches the start only: once a reply succeeded, failures are
    a client's own (retried, then left out)."""
    merged: list[int] = []

    def app(message, context):
        if message.metadata.message_type == "train":
            if merged:
                client = int(message.content["config"]["client-id"])
                if client % 2:
                    raise ValueError("odd clients broke")
            merged.append(1)
        return fedstale_client_app(message, context)

    cfg = config("fedasync", data__num_clients=6, strategy__concurrency=3, stop__num_updates=20, **ONE_TASK_PER_MESSAGE)
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    run_strategy(strategy, LocalGrid(app, num_nodes=2), cfg)
    assert strategy.pool.excluded == {1, 3, 5}
    assert recorder.evaluations[-1]["version"] == 20
