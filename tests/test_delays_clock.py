"""Tests of the delay model (simulation/delays.py) and clocks (simulation/clock.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstale.simulation.clock import VirtualClock, WallClock
from fedstale.simulation.delays import (
    ConstantDistribution,
    DelayModel,
    ExponentialDistribution,
    LogNormalDistribution,
    ParetoDistribution,
    UniformDistribution,
    make_distribution,
)
from fedstale.strategies.task import Task

ARRIVED = object()  # stands in for a reply Message: only "is not None" matters


def make_task(
    task_id: int,
    *,
    client_id: int = 0,
    index: int = 0,
    dispatch_time: float = 0.0,
    num_examples: int | None = 100,
    epochs: float = 1.0,
    min_epochs: float = 1.0,
    bytes_down: int = 0,
) -> Task:
    """A Task with the dispatch fields that matter to the clock."""
    return Task(
        task_id=task_id,
        client_id=client_id,
        node_id=0,
        index=index,
        dispatch_version=0,
        dispatch_time=dispatch_time,
        num_examples=num_examples,
        epochs=epochs,
        min_epochs=min_epochs,
        bytes_down=bytes_down,
        lr=0.1,
        seed=0,
    )


# --------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------


def test_constant_distribution() -> None:
    """ConstantDistribution always returns its value; its mean is that value."""
    dist = ConstantDistribution(0.25)
    rng = np.random.default_rng(0)
    assert [dist.sample(rng) for _ in range(5)] == [0.25] * 5
    assert dist.mean == 0.25


def test_uniform_distribution_within_bounds() -> None:
    """UniformDistribution samples lie in [low, high] and average (low + high)/2."""
    dist = UniformDistribution(2.0, 3.0)
    rng = np.random.default_rng(1)
    samples = np.array([dist.sample(rng) for _ in range(4000)])
    assert samples.min() >= 2.0
    assert samples.max() <= 3.0
    assert dist.mean == 2.5
    # SE of the mean = (1/√12)/√4000 ≈ 0.0046
    assert abs(samples.mean() - 2.5) < 0.02


def test_exponential_distribution_mean() -> None:
    """ExponentialDistribution's sample mean matches its mean."""
    dist = ExponentialDistribution(0.4)
    rng = np.random.default_rng(2)
    samples = np.array([dist.sample(rng) for _ in range(20000)])
    assert dist.mean == 0.4
    assert samples.min() > 0
    assert abs(samples.mean() / 0.4 - 1) < 0.03


def test_lognormal_mean_and_median() -> None:
    """Lognormal(mean, σ) has E[X] = mean (μ = ln(mean) − σ²/2) over 20000 draws."""
    mean, sigma = 0.2, 0.5
    dist = LogNormalDistribution(mean, sigma)
    rng = np.random.default_rng(3)
    samples = np.array([dist.sample(rng) for _ in range(20000)])
    assert dist.mean == mean
    assert abs(samples.mean() / mean - 1) < 0.03
    # the median of a lognormal is e^μ = mean · e^(−σ²/2) ≈ 0.17650
    expected_median = mean * math.exp(-(sigma**2) / 2)
    assert abs(np.median(samples) / expected_median - 1) < 0.03


def test_pareto_bounds_and_mean() -> None:
    """Pareto samples lie in [scale, cap]; mean = α·x_m/(α − 1)."""
    dist = ParetoDistribution(shape=1.5, scale=0.01, cap=0.1)
    rng = np.random.default_rng(4)
    samples = np.array([dist.sample(rng) for _ in range(5000)])
    assert samples.min() >= 0.01
    assert samples.max() <= 0.1
    assert (samples == 0.1).sum() > 0  # P(X > 0.1) = 10^-1.5 ≈ 3%: the cap is hit
    assert dist.mean == pytest.approx(1.5 * 0.01 / 0.5)  # 0.03


def test_pareto_tail() -> None:
    """Uncapped Pareto: P(X > 2·x_m) = 2^(−α)."""
    dist = ParetoDistribution(shape=1.5, scale=0.01)
    rng = np.random.default_rng(5)
    samples = np.array([dist.sample(rng) for _ in range(20000)])
    assert samples.min() >= 0.01
    assert abs((samples > 0.02).mean() - 2**-1.5) < 0.015  # 0.3536


def test_pareto_mean_heavy_tail() -> None:
    """α ≤ 1: the mean is infinite, or the cap when capped."""
    assert ParetoDistribution(shape=1.0, scale=0.01).mean == math.inf
    assert ParetoDistribution(shape=0.8, scale=0.01, cap=0.5).mean == 0.5


def test_make_distribution_builds_each() -> None:
    """make_distribution maps YAML names and parameters to distributions."""
    assert make_distribution("constant", value=0.3) == ConstantDistribution(0.3)
    assert make_distribution("uniform", low=1, high=2) == UniformDistribution(1.0, 2.0)
    assert make_distribution("exponential", mean=0.1) == ExponentialDistribution(0.1)
    assert make_distribution("lognormal", mean=0.1, sigma=0.4) == LogNormalDistribution(0.1, 0.4)
    assert make_distribution("pareto", shape=1.2, scale=0.005, cap=0.5) == ParetoDistribution(
        1.2, 0.005, 0.5
    )
    assert make_distribution("pareto", shape=1.2, scale=0.005).cap is None
    assert make_distribution("pareto", shape=1.2, scale=0.005, cap=None).cap is None


def test_make_distribution_unknown_name() -> None:
    """An unknown name raises ValueError listing the five accepted names."""
    with pytest.raises(ValueError) as info:
        make_distribution("weibull", shape=1.0)
    assert str(info.value) == (
        "unknown distribution 'weibull'; accepted: "
        "constant, uniform, exponential, lognormal, pareto"
    )


# --------------------------------------------------------------------------
# DelayModel
# --------------------------------------------------------------------------


def test_client_speed_independent_of_query_order() -> None:
    """A client's speed does not depend on the order clients are queried in."""
    speed = UniformDistribution(0.01, 0.1)
    forward = DelayModel(speed, seed=3)
    backward = DelayModel(speed, seed=3)
    first = {c: forward.client_speed(c) for c in range(10)}
    second = {c: backward.client_speed(c) for c in reversed(range(10))}
    assert first == second
    assert len(set(first.values())) == 10  # every client has its own speed
    assert all(0.01 <= v <= 0.1 for v in first.values())
    # cached: asking again returns the same value
    assert forward.client_speed(4) == first[4]


def test_client_speed_depends_on_seed() -> None:
    """Different seeds draw different speeds for the same client."""
    speed = UniformDistribution(0.01, 0.1)
    a = [DelayModel(speed, seed=0).client_speed(c) for c in range(5)]
    b = [DelayModel(speed, seed=1).client_speed(c) for c in range(5)]
    assert sum(x != y for x, y in zip(a, b)) == 5


def test_jitter_zero_is_one() -> None:
    """jitter = 0 gives a factor of exactly 1 for every task."""
    model = DelayModel(ConstantDistribution(0.01), jitter=0.0)
    assert {model.jitter_factor(c, i) for c in range(3) for i in range(5)} == {1.0}


def test_jitter_varies_by_task_and_is_reproducible() -> None:
    """With jitter > 0 the factor differs between task indices, is reproducible,
    and has mean ≈ 1."""
    model = DelayModel(ConstantDistribution(0.01), jitter=0.3, seed=7)
    factors = [model.jitter_factor(2, i) for i in range(5)]
    assert len(set(factors)) == 5
    fresh = DelayModel(ConstantDistribution(0.01), jitter=0.3, seed=7)
    assert [fresh.jitter_factor(2, i) for i in reversed(range(5))] == factors[::-1]
    many = np.array([model.jitter_factor(1, i) for i in range(4000)])
    # SE ≈ 0.31/√4000 ≈ 0.005
    assert abs(many.mean() - 1.0) < 0.03
    assert many.min() > 0


def test_compute_time_formula() -> None:
    """compute_time = speed · num_examples · epochs · jitter."""
    plain = DelayModel(ConstantDistribution(0.02), jitter=0.0)
    assert plain.compute_time(4, 2, 50, 3) == pytest.approx(0.02 * 50 * 3)  # 3.0
    jittered = DelayModel(ConstantDistribution(0.02), jitter=0.2, seed=1)
    factor = jittered.jitter_factor(4, 2)
    assert factor != 1.0
    assert jittered.compute_time(4, 2, 50, 3) == pytest.approx(3.0 * factor)


def test_communication_time_formula() -> None:
    """communication_time = 2·latency + (down + up)/bandwidth."""
    model = DelayModel(ConstantDistribution(0.01), latency=0.05, bandwidth=1e6)
    assert model.communication_time(200_000, 300_000) == pytest.approx(0.1 + 0.5)
    free = DelayModel(ConstantDistribution(0.01), latency=0.25)
    assert free.communication_time(10**9, 10**9) == pytest.approx(0.5)


# --------------------------------------------------------------------------
# VirtualClock
# --------------------------------------------------------------------------


def hand_clock(min_upload_fraction: float = 1.0) -> VirtualClock:
    """0.01 s/example, no jitter, 0.5 s latency each way, 1000 B/s."""
    delays = DelayModel(ConstantDistribution(0.01), jitter=0.0, latency=0.5, bandwidth=1000.0)
    return VirtualClock(delays, min_upload_fraction=min_upload_fraction)


def test_schedule_sets_earliest_finish() -> None:
    """earliest_finish = dispatch + compute(min_epochs) + comm(down, down·fraction)."""
    clock = hand_clock(min_upload_fraction=0.5)
    task = make_task(0, dispatch_time=3.0, num_examples=100, epochs=2, min_epochs=1, bytes_down=200)
    clock.schedule(task)
    # compute = 0.01·100·1 = 1.0; comm = 2·0.5 + (200 + 100)/1000 = 1.3
    assert task.earliest_finish == pytest.approx(3.0 + 1.0 + 1.3)
    assert task.finish_time is None


def test_schedule_without_num_examples() -> None:
    """Unknown dataset size: the lower bound is the communication time only."""
    clock = hand_clock()
    task = make_task(0, dispatch_time=1.0, num_examples=None, bytes_down=500)
    clock.schedule(task)
    assert task.earliest_finish == pytest.approx(1.0 + 1.0 + 1000 / 1000)


def test_complete_uses_reported_work() -> None:
    """complete: finish = dispatch + compute(reported n, epochs) + comm(down, up)."""
    clock = hand_clock(min_upload_fraction=0.5)
    task = make_task(0, dispatch_time=3.0, num_examples=100, epochs=2, min_epochs=1, bytes_down=200)
    clock.schedule(task)
    clock.complete(task, num_examples=120, epochs=2, bytes_up=50)
    # compute = 0.01·120·2 = 2.4; comm = 1 + 250/1000 = 1.25
    assert task.finish_time == pytest.approx(3.0 + 2.4 + 1.25)


def test_complete_never_before_earliest_finish() -> None:
    """A reply reporting less work than the bound still finishes at the bound."""
    clock = hand_clock()
    task = make_task(0, dispatch_time=0.0, num_examples=100, epochs=2, min_epochs=2, bytes_down=100)
    clock.schedule(task)
    assert task.earliest_finish == pytest.approx(2.0 + 1.0 + 0.2)
    clock.complete(task, num_examples=10, epochs=1, bytes_up=0)
    assert task.finish_time == pytest.approx(3.2)


def test_fail_uses_full_planned_duration() -> None:
    """fail: finish = dispatch + compute(planned epochs) + comm(down, down)."""
    clock = hand_clock(min_upload_fraction=0.1)
    task = make_task(0, dispatch_time=2.0, num_examples=50, epochs=4, min_epochs=1, bytes_down=300)
    clock.schedule(task)
    # bound: 0.5 + 1 + 330/1000 = 1.83
    assert task.earliest_finish == pytest.approx(2.0 + 1.83)
    clock.fail(task)
    # full: 0.01·50·4 = 2.0; comm = 1 + 600/1000 = 1.6
    assert task.finish_time == pytest.approx(2.0 + 2.0 + 1.6)


def _arrive(clock: VirtualClock, task: Task) -> None:
    clock.complete(task, num_examples=task.num_examples or 0, epochs=task.epochs, bytes_up=0)
    task.reply = ARRIVED  # type: ignore[assignment]


def test_next_due_delivers_in_virtual_order() -> None:
    """Replies arriving in reverse order are delivered in virtual-finish order."""
    clock = hand_clock()
    # durations: 1 + 0.01·n → 4.0, 3.0, 2.0 s
    tasks = [make_task(i, client_id=i, num_examples=n) for i, n in enumerate((300, 200, 100))]
    for task in tasks:
        clock.schedule(task)
    assert [t.earliest_finish for t in tasks] == pytest.approx([4.0, 3.0, 2.0])
    pending = list(tasks)
    assert clock.next_due(pending) is None  # nothing arrived yet

    _arrive(clock, tasks[0])  # slowest arrives first physically
    assert clock.next_due(pending) is None  # tasks 1, 2 could still finish earlier
    _arrive(clock, tasks[1])
    assert clock.next_due(pending) is None  # task 2 (bound 2.0) could precede
    _arrive(clock, tasks[2])

    delivered = []
    while pending:
        task = clock.next_due(pending)
        assert task is not None
        clock.advance(task)
        delivered.append((task.task_id, clock.now))
        pending.remove(task)
    assert [d[0] for d in delivered] == [2, 1, 0]
    assert [d[1] for d in delivered] == pytest.approx([2.0, 3.0, 4.0])


def test_next_due_delivers_when_pending_bound_is_later() -> None:
    """An arrived reply is delivered if every pending task's bound is later."""
    clock = hand_clock()
    fast = make_task(0, num_examples=100)  # finishes at 2.0
    slow = make_task(1, num_examples=500)  # bound 6.0
    for task in (fast, slow):
        clock.schedule(task)
    _arrive(clock, fast)
    assert clock.next_due([fast, slow]) is fast


def test_next_due_ties_broken_by_task_id() -> None:
    """Equal finish times: the smaller task_id goes first, arrived or pending."""
    clock = hand_clock()
    a, b = make_task(5, num_examples=100), make_task(3, num_examples=100)
    for task in (a, b):
        clock.schedule(task)
    _arrive(clock, a)
    _arrive(clock, b)
    assert a.finish_time == b.finish_time
    assert clock.next_due([a, b]).task_id == 3  # type: ignore[union-attr]

    # arrived id 5 vs pending id 3 with the same time: wait for id 3
    c, d = make_task(5, num_examples=100), make_task(3, num_examples=100)
    for task in (c, d):
        clock.schedule(task)
    _arrive(clock, c)
    assert clock.next_due([c, d]) is None
    # arrived id 3 vs pending id 5 with the same time: deliver id 3
    e, f = make_task(3, num_examples=100), make_task(5, num_examples=100)
    for task in (e, f):
        clock.schedule(task)
    _arrive(clock, e)
    assert clock.next_due([e, f]) is e


def test_next_due_failed_task_counts_as_arrived() -> None:
    """A failed task is delivered at its full planned finish time."""
    clock = hand_clock()
    failed = make_task(0, num_examples=100, epochs=3, min_epochs=1)  # bound 2.0, full 4.0
    other = make_task(1, num_examples=250)  # bound 3.5
    for task in (failed, other):
        clock.schedule(task)
    clock.fail(failed)
    failed.failure = "timeout"
    assert failed.finish_time == pytest.approx(4.0)
    assert clock.next_due([failed, other]) is None  # other may finish at 3.5
    _arrive(clock, other)
    assert clock.next_due([failed, other]) is other


def test_advance_never_moves_backwards() -> None:
    """advance sets now = max(now, finish_time)."""
    clock = hand_clock()
    late, early = make_task(0), make_task(1)
    late.finish_time, early.finish_time = 5.0, 3.0
    clock.advance(late)
    assert clock.now == 5.0
    clock.advance(early)
    assert clock.now == 5.0
    clock.start()
    assert clock.now == 0.0


# --------------------------------------------------------------------------
# WallClock
# --------------------------------------------------------------------------


def test_wall_clock_next_due_earliest_arrived() -> None:
    """WallClock delivers the earliest arrived task and never waits for pending ones."""
    clock = WallClock()
    first, second, pending = make_task(0), make_task(1), make_task(2)
    assert clock.next_due([first, second, pending]) is None
    first.finish_time, second.finish_time = 2.0, 1.0
    first.reply = second.reply = ARRIVED  # type: ignore[assignment]
    pending.earliest_finish = 0.0
    assert clock.next_due([first, second, pending]) is second
    assert clock.next_due([first, pending]) is first


def test_wall_clock_schedule_and_complete() -> None:
    """WallClock: earliest_finish = dispatch time; finish_time = wall seconds elapsed."""
    clock = WallClock()
    clock.start()
    task = make_task(0, dispatch_time=1.5)
    clock.schedule(task)
    assert task.earliest_finish == 1.5
    before = clock.wall_elapsed()
    clock.complete(task, num_examples=10, epochs=1, bytes_up=100)
    after = clock.wall_elapsed()
    assert task.finish_time is not None
    assert before <= task.finish_time <= after
