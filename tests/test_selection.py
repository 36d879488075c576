"""Selection policies: each rule's choices on a hand-made pool."""

from __future__ import annotations

import numpy as np
import pytest

from fedstale.strategies import Task
from fedstale.strategies.pool import BOOKS, ClientPool
from fedstale.strategies.selection import (
    SELECTION_POLICIES,
    FastestFirst,
    LeastParticipated,
    Oort,
    RandomSelection,
    RoundRobin,
    make_selection,
)


def _pool(policy, num_clients: int = 6) -> ClientPool:
    pool = ClientPool(policy)
    pool.populate(num_clients)
    return pool


def _dispatch(pool: ClientPool, clients: list[int]) -> None:
    for client in clients:
        pool.start_task(client)


def _reply(pool: ClientPool, client: int, duration: float, loss: float, examples: int, **extra):
    """An intact reply of ``client`` that took ``duration`` virtual seconds."""
    task = Task(
        task_id=0, client_id=client, node_id=0, index=0, dispatch_version=0, dispatch_time=10.0,
        num_examples=examples, epochs=1, min_epochs=1, bytes_down=0, lr=0.1, seed=0,
    )
    task.finish_time = 10.0 + duration
    task.metrics = {"num-examples": examples, "train-loss": loss, **extra}
    pool.task_ended(client)
    pool.on_reply(task, staleness=0)


def test_registry_names_and_unknown_name():
    assert list(SELECTION_POLICIES) == [
        "random", "round_robin", "least_participated", "fastest_first", "oort",
    ]
    assert isinstance(make_selection("oort", 3, epsilon=0.5), Oort)
    with pytest.raises(ValueError, match="unknown selection policy 'oor'"):
        make_selection("oor", 0)


def test_round_robin_goes_round_skipping_busy_clients():
    """6 clients, cursor 0: [0, 1, 2]; 0 and 2 back: [3, 4] (1 busy); then [5, 0] wraps; then [2]."""
    pool = _pool(RoundRobin())
    first = pool.select(3)
    assert first == [0, 1, 2]
    _dispatch(pool, first)
    pool.task_ended(0)
    pool.task_ended(2)
    second = pool.select(2)
    assert second == [3, 4]
    _dispatch(pool, second)
    third = pool.select(2)
    assert third == [5, 0]
    _dispatch(pool, third)
    assert pool.select(3) == [2]  # 1, 3, 4, 5, 0 busy; the cursor is at 1
    assert pool.policy.run_state() == {"cursor": 3}


def test_least_participated_evens_out_participation():
    """Participations [3, 1, 0, 1, 2, 0]: fewest first, ties by id → [2, 5, 1, 3]."""
    pool = _pool(LeastParticipated())
    for client, times in enumerate([3, 1, 0, 1, 2, 0]):
        for _ in range(times):
            pool.start_task(client)
            pool.task_ended(client)
    assert pool.select(4) == [2, 5, 1, 3]
    _dispatch(pool, [2, 5, 1, 3])
    assert pool.select(2) == [4, 0]


def test_fastest_first_tries_unmeasured_clients_then_the_fastest():
    """Durations 0: 4.0 s, 1: 0.5 s, 3: 2.0 s, 4: 0.5 s; 2 and 5 never measured."""
    pool = _pool(FastestFirst())
    for client, duration in ((0, 4.0), (1, 0.5), (3, 2.0), (4, 0.5)):
        _dispatch(pool, [client])
        _reply(pool, client, duration, loss=1.0, examples=10)
    assert pool.last_duration == {0: 4.0, 1: 0.5, 3: 2.0, 4: 0.5}
    assert pool.select(4) == [2, 5, 1, 4]
    _dispatch(pool, [2, 5, 1, 4])
    assert pool.select(2) == [3, 0]


def _oort_pool(epsilon: float, preferred: float | None = 2.0, seed: int = 0) -> ClientPool:
    """Explored: client (examples, loss, duration) 0: (10, 1.0, 1 s), 1: (20, 1.0, 4 s),
    2: (40, 0.5, 1 s), 3: (5, 2.0, 8 s); 4 and 5 unexplored.

    With T = 2 s and α = 2, U = 10, 20·(2/4)² = 5, 20, 10·(2/8)² = 0.625.
    """
    pool = _pool(Oort(seed, epsilon=epsilon, alpha=2.0, preferred_duration=preferred))
    for client, (examples, loss, duration) in enumerate(
        [(10, 1.0, 1.0), (20, 1.0, 4.0), (40, 0.5, 1.0), (5, 2.0, 8.0)]
    ):
        _dispatch(pool, [client])
        _reply(pool, client, duration, loss, examples)
    return pool


def test_oort_utility_with_the_speed_penalty():
    pool = _oort_pool(epsilon=0.0)
    oort = pool.policy
    assert oort.explored(pool) == {0, 1, 2, 3}
    assert [oort.utility(c, pool, 2.0) for c in range(4)] == [10.0, 5.0, 20.0, 0.625]
    assert oort.deadline(pool) == 2.0
    oort.preferred_duration = None
    assert oort.deadline(pool) == 2.5  # median of 1, 4, 1, 8


def test_oort_exploits_the_clients_above_the_cutoff():
    """ε = 0, two picks: the 2nd highest utility is 10, cutoff 9.5 → exactly {2, 0}."""
    pool = _oort_pool(epsilon=0.0)
    chosen = pool.select(2)
    assert sorted(chosen) == [0, 2]
    _dispatch(pool, chosen)
    assert pool.select(1) == [1]  # of 1 (U = 5) and 3 (U = 0.625), cutoff 4.75


def test_oort_draws_in_proportion_to_utility_above_the_cutoff():
    """One pick among 2 (U = 20) and a client 5 with U = 19.5 ≥ 0.95·20: drawn ∝ U."""
    pool = _oort_pool(epsilon=0.0, seed=4)
    _dispatch(pool, [5])
    _reply(pool, 5, 1.0, loss=1.95, examples=10)
    reference = np.random.default_rng([4, 4])
    expected = [2, 5][int(reference.choice(2, size=1, replace=False, p=[20 / 39.5, 19.5 / 39.5])[0])]
    assert pool.select(1) == [expected]


def test_oort_explores_unexplored_clients_with_probability_epsilon():
    """ε = 1: every pick explores, uniformly among 4 and 5, as default_rng([seed, 4]) draws."""
    pool = _oort_pool(epsilon=1.0, seed=7)
    reference = np.random.default_rng([7, 4])
    reference.random(2)  # the ε draws, one per pick (all < 1)
    expected = [int(c) for c in reference.choice([4, 5], size=2, replace=False)]
    assert pool.select(2) == expected
    _dispatch(pool, expected)
    assert pool.select(1) == [2]  # nothing left to explore: exploit the best


def test_oort_explores_when_nothing_is_explored_yet():
    pool = _pool(Oort(0, epsilon=0.0))
    chosen = pool.select(3)
    assert len(set(chosen)) == 3 and set(chosen) <= set(range(6))


def test_oort_uses_the_squared_loss_when_the_client_reports_it():
    pool = _pool(Oort(0))
    _dispatch(pool, [0])
    _reply(pool, 0, 1.0, loss=1.0, examples=10, **{"train-loss-squared": 2.25})
    assert pool.last_loss == {0: 1.5}


@pytest.mark.parametrize("name", list(SELECTION_POLICIES))
def test_policies_are_seeded_and_resume_where_they_stopped(name):
    """Same seed → same choices; a policy restored from run_state continues identically."""
    def play(policy, rounds):
        pool = _pool(policy, 8)
        out = []
        for step in range(rounds):
            chosen = pool.select(3)
            out.append(chosen)
            for client in chosen:
                pool.start_task(client)
                _reply(pool, client, 1.0 + client % 3, 1.0 / (1 + step), 10 + client)
        return out, pool

    first, pool = play(make_selection(name, 5), 4)
    again, _ = play(make_selection(name, 5), 4)
    assert first == again
    saved = pool.policy.run_state()
    books = pool.books()
    resumed = make_selection(name, 5)
    resumed.load_run_state(saved)
    fresh = ClientPool(resumed)
    fresh.populate(8)
    fresh.load_books(books)
    assert fresh.select(3) == pool.select(3)


def _reference_choice(name: str, idle: list[int], count: int, pool: ClientPool, rng) -> list[int]:
    """Each policy's rule written out on the listed idle clients, as the policies first did it."""
    if name == "random":
        return [int(c) for c in rng.choice(idle, size=count, replace=False)]
    if name == "round_robin":
        return sorted(idle, key=lambda c: (c - pool.policy.cursor) % len(pool.clients))[:count]
    if name == "least_participated":
        return sorted(idle, key=lambda c: (pool.participations(c), c))[:count]
    if name == "fastest_first":
        durations = pool.last_duration
        return sorted(idle, key=lambda c: (c in durations, durations.get(c, 0.0), c))[:count]
    raise AssertionError(name)


def _played_pool(name: str, population: int, steps: int, seed: int) -> ClientPool:
    """A pool after ``steps`` dispatches and replies of random clients (random books)."""
    gen = np.random.default_rng(seed)
    pool = _pool(make_selection(name, seed), population)
    for step in range(steps):
        client = int(gen.integers(population))
        pool.start_task(client)
        if gen.random() < 0.7:  # the others stay busy
            _reply(pool, client, float(gen.integers(1, 5)), 1.0 / (1 + step % 3), 10 + client % 4)
    return pool


@pytest.mark.parametrize("name", ["random", "round_robin", "least_participated", "fastest_first"])
def test_lazy_idle_choices_equal_the_rule_on_the_listed_clients(name):
    """On the lazy idle sequence every policy picks what its rule picks on the sorted list."""
    for seed in range(30):
        pool = _played_pool(name, population=40, steps=25, seed=seed)
        if name == "round_robin":
            pool.policy.cursor = seed % 40
        idle = sorted(pool.clients - pool.busy)
        count = 1 + seed % 7
        expected = _reference_choice(name, idle, count, pool, np.random.default_rng([seed, 4]))
        assert pool.select(count) == expected, seed


def test_oort_picks_the_same_on_the_lazy_and_the_listed_idle_clients():
    for seed in range(30):
        lazy, listed = _played_pool("oort", 40, 25, seed), _played_pool("oort", 40, 25, seed)
        listed._population = -1  # a population that is not 0 .. N-1: the pool lists the idle clients
        assert lazy.select(5) == listed.select(5), seed


@pytest.mark.parametrize("name", list(SELECTION_POLICIES))
def test_no_policy_lists_a_million_idle_clients(name, monkeypatch):
    """At N = 1,000,000 with 1,000 busy, a dispatch never walks the idle population."""
    from fedstale.strategies.idle import IdleClients

    def refuse(self, *args):
        raise AssertionError("the idle population was listed")

    class Population(set):
        """The pool's clients, refusing to be walked or subtracted from."""

        __iter__ = __sub__ = refuse

    pool = _played_pool(name, population=1_000_000, steps=300, seed=1)
    pool.busy |= set(range(5_000, 6_000))
    pool.clients = Population(pool.clients)
    monkeypatch.setattr(IdleClients, "__iter__", refuse)
    chosen = pool.select(50)
    assert len(set(chosen)) == 50 and not set(chosen) & pool.busy


def test_the_new_books_are_saved():
    assert {"last_duration", "last_loss", "last_examples"} <= set(BOOKS)
    assert isinstance(RandomSelection(0).rng, np.random.Generator)


# --------------------------------------------------------------------------
# In a run
# --------------------------------------------------------------------------


def test_policies_in_a_tiny_run(monkeypatch):
    """6 clients, 3 at once: round robin dispatches clients 0..5 in turn; least_participated
    and fastest_first try every client once before any twice; the pool's books fill in."""
    from fedstale.config import ConfigError
    from tests.helpers import TINY_OVERRIDES, config, run

    for name in ("round_robin", "least_participated", "fastest_first", "oort"):
        cls = SELECTION_POLICIES[name]
        dispatched: list[int] = []
        original = cls.choose

        def spy(self, idle, count, pool, _original=original, _out=dispatched):
            chosen = _original(self, idle, count, pool)
            _out.extend(chosen)
            return chosen

        monkeypatch.setattr(cls, "choose", spy)
        _, strategy, recorder = run(config(**TINY_OVERRIDES, **{"strategy.selection": name}))
        assert strategy.pool.policy.name == name
        if name == "round_robin":
            assert dispatched[:6] == [0, 1, 2, 3, 4, 5]
        elif name != "oort":
            assert sorted(dispatched[:6]) == [0, 1, 2, 3, 4, 5]
        replied = {r["client_id"] for r in recorder.updates}
        assert set(strategy.pool.last_duration) == replied
    with pytest.raises(ConfigError, match=r"strategy.selection: 'ort' is not one of .*did you mean 'oort'"):
        config(**{"strategy.selection": "ort"})
    with pytest.raises(ConfigError, match="strategy.oort.epsilon: must be <= 1"):
        config(**{"strategy.oort.epsilon": 1.5})
