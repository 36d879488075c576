"""The client pool: selection (retries first, then the policy), budgets, backoff, books."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fedstale.strategies.pool import BOOKS, ClientPool, RandomSelection


def _pool(num_clients: int = 6, seed: int = 0, **options) -> ClientPool:
    pool = ClientPool(RandomSelection(seed), **options)
    pool.populate(num_clients)
    return pool


def test_random_selection_is_the_seeded_uniform_choice():
    """The draws are default_rng([seed, 4]).choice(idle, k, replace=False), call after call."""
    pool = _pool(10, seed=7)
    reference = np.random.default_rng([7, 4])
    first = pool.select(3)
    assert first == [int(c) for c in reference.choice(list(range(10)), size=3, replace=False)]
    for client in first:
        pool.start_task(client)
    idle = sorted(set(range(10)) - set(first))
    second = pool.select(4)
    assert second == [int(c) for c in reference.choice(idle, size=4, replace=False)]
    assert len(set(first) | set(second)) == 7


def test_select_returns_fewer_when_few_are_idle_and_draws_nothing_when_none_are():
    pool = _pool(3)
    for client in pool.select(3):
        pool.start_task(client)
    state = pool.policy.run_state()
    assert pool.select(2) == []
    assert pool.policy.run_state() == state  # no draw was made
    pool.task_ended(1)
    assert pool.select(5) == [1]


def test_a_failed_client_is_retried_first_then_left_out_after_max_retries():
    pool = _pool(6, max_retries=1)
    pool.start_task(4)
    pool.task_ended(4)
    pool.on_failure(4, "error reply (2): boom")
    assert pool.retry_first == [4] and pool.consecutive_failures == {4: 1}
    chosen = pool.select(2)
    assert chosen[0] == 4 and pool.retry_first == []
    pool.start_task(4)
    pool.task_ended(4)
    pool.on_failure(4, "error reply (2): boom")
    assert pool.excluded == {4} and pool.retry_first == []
    assert 4 not in pool.select(5)


def test_success_resets_the_failure_count_and_keeps_the_staleness():
    pool = _pool(4, max_retries=1)
    pool.on_failure(2, "x")
    pool.on_success(2, staleness=3)
    pool.on_failure(2, "x")
    assert pool.consecutive_failures[2] == 1 and pool.excluded == set()
    assert pool.last_staleness == {2: 3}


def test_sync_mode_does_not_line_up_retries():
    pool = _pool(4, retry=False)
    pool.on_failure(1, "x")
    assert pool.retry_first == [] and pool.consecutive_failures == {1: 1}


def test_retry_backoff_doubles_up_to_its_cap(monkeypatch):
    """b = 2 s, b_max = 5 s: waits of 2, 4, then 5 s after the 1st, 2nd and 3rd failures."""
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    pool = _pool(4, max_retries=5, retry_backoff=(2.0, 5.0))
    waits = []
    for _ in range(3):
        pool.on_failure(0, "x")
        waits.append(pool.retry_at[0] - now[0])
    assert waits == [2.0, 4.0, 5.0]
    assert pool.backing_off() == {0}
    assert 0 not in pool.select(4)  # still waiting: not even among the idle
    now[0] += 5.0
    assert pool.backing_off() == set() and pool.retry_at == {}
    pool.on_failure(1, "x")  # a client that waits does not block the others
    assert pool.select(1) == [0]


def test_participation_budget():
    pool = _pool(3, max_participations=2)
    for _ in range(2):
        pool.start_task(0)
        pool.task_ended(0)
    assert pool.participations(0) == 2 and pool.participations(1) == 0
    assert pool.budget_spent() == {0}
    assert 0 not in pool.select(3)
    assert pool.stop_reason(idle=True) == ""
    for client in (1, 2):
        for _ in range(2):
            pool.start_task(client)
            pool.task_ended(client)
    assert pool.stop_reason(idle=False) == ""  # tasks still in flight
    assert pool.stop_reason(idle=True) == "every client spent its privacy budget (max_participations)"


def test_unlimited_budget_and_the_left_out_stop_reason():
    pool = _pool(2, max_retries=0)
    for _ in range(50):
        pool.start_task(0)
    assert pool.budget_spent() == set()
    pool.on_failure(0, "x")
    assert pool.stop_reason(idle=True) == ""
    pool.on_failure(1, "x")
    assert pool.stop_reason(idle=False) == "every client was left out after failures"


def test_evaluation_sample_skips_left_out_clients_and_leaves_training_draws_alone():
    pool = _pool(8, seed=3, max_retries=0)
    pool.on_failure(5, "x")
    state = pool.policy.run_state()
    sample = pool.sample_for_evaluation(3, seed=3, version=10)
    rng = np.random.default_rng([3, 3, 10])
    assert sample == sorted(int(c) for c in rng.choice([0, 1, 2, 3, 4, 6, 7], size=3, replace=False))
    assert pool.policy.run_state() == state
    assert pool.sample_for_evaluation(20, seed=3, version=10) == [0, 1, 2, 3, 4, 6, 7]
    assert pool.sample_for_evaluation(0, seed=3, version=10) == []


def test_books_round_trip_and_are_copies():
    pool = _pool(5, max_retries=3)
    pool.start_task(1)
    pool.on_failure(1, "x")
    pool.on_success(3, staleness=2)
    books = pool.books()
    assert set(books) == set(BOOKS)
    assert books == {
        "excluded": set(),
        "retry_first": [1],
        "consecutive_failures": {1: 1, 3: 0},
        "last_staleness": {3: 2},
        "task_index": {1: 1},
        "last_duration": {},  # on_reply fills these three (tests/test_selection.py)
        "last_loss": {},
        "last_examples": {},
    }
    books["retry_first"].append(9)
    assert pool.retry_first == [1]
    other = _pool(5)
    other.load_books(pool.books())
    assert other.books() == pool.books()


def test_random_selection_state_round_trip():
    policy = RandomSelection(11)
    policy.choose(list(range(20)), 5, None)  # type: ignore[arg-type]
    state = policy.run_state()
    expected = policy.choose(list(range(20)), 5, None)  # type: ignore[arg-type]
    again = RandomSelection(11)
    again.load_run_state(state)
    assert again.choose(list(range(20)), 5, None) == expected  # type: ignore[arg-type]
    again.reset()
    assert again.run_state() == RandomSelection(11).run_state()


class _FewestTasksFirst:
    """A policy of the shape a later issue adds: reads the pool's books."""

    name = "fewest_tasks_first"

    def reset(self) -> None:
        pass

    def choose(self, idle, count, pool):
        return sorted(idle, key=lambda c: (pool.participations(c), c))[:count]

    def run_state(self):
        return None

    def load_run_state(self, state) -> None:
        del state


def test_a_policy_sees_only_who_may_train_and_the_pool_books():
    pool = ClientPool(_FewestTasksFirst(), max_retries=0)
    pool.populate(4)
    for client, tasks in ((0, 2), (1, 1), (3, 1)):
        for _ in range(tasks):
            pool.start_task(client)
            pool.task_ended(client)
    pool.on_failure(3, "x")  # left out
    assert pool.select(2) == [2, 1]


@pytest.mark.parametrize("count", [0, -1])
def test_nothing_to_select(count):
    assert _pool(4).select(count) == []


def test_idle_clients_index_like_the_sorted_set_difference():
    import random

    from fedstale.strategies.idle import IdleClients

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 300)
        gone = set(rng.sample(range(n), rng.randint(0, n))) | {n + 5}
        idle, expected = IdleClients(n, gone), sorted(set(range(n)) - gone)
        assert len(idle) == len(expected) and list(idle) == expected
        assert [idle[i] for i in range(len(expected))] == expected
        assert [c for c in range(-2, n + 3) if c in idle] == expected
        assert [idle.rank(c) for c in range(n + 2)] == [sum(e < c for e in expected) for c in range(n + 2)]
        more = set(rng.sample(range(n), rng.randint(0, n)))
        assert list(idle.without(more)) == sorted(set(expected) - more)
