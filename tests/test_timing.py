"""Papaya / FL-GO's time knobs: aggregation_delay, staleness in seconds, per-second decay."""

from __future__ import annotations

import math
import time

import pytest
import torch

from fedstale.aggregation.staleness import (
    Constant,
    Exponential,
    Polynomial,
    make_staleness_function,
)
from fedstale.config import ConfigError
from fedstale.simulation.clock import VirtualClock, WallClock
from fedstale.simulation.delays import DelayModel, make_distribution
from fedstale.strategies import ClientUpdate, FedAsync, FedBuff, Task
from fedstale.strategies.task import too_stale
from tests.helpers import TINY_OVERRIDES, config, run


def _update(params, base, staleness=0, age=0.0, client=0):
    task = Task(
        task_id=0, client_id=client, node_id=0, index=0, dispatch_version=0, dispatch_time=0.0,
        num_examples=10, epochs=1, min_epochs=1, bytes_down=0, lr=0.1, seed=0,
    )
    return ClientUpdate(
        task=task, params=torch.tensor(params, dtype=torch.float32),
        base=torch.tensor(base, dtype=torch.float32), staleness=staleness, num_examples=10,
        age=age,
    )


# --------------------------------------------------------------------------
# Staleness in seconds
# --------------------------------------------------------------------------


def test_exponential_decays_per_version_and_per_second():
    """w = 0.5, w_s = 0.9: τ = 2, a = 3 s → 0.25 · 0.729; w_s = 1 is w^τ alone."""
    both = make_staleness_function("exponential", w=0.5, w_per_second=0.9)
    assert both == Exponential(0.5, 0.9)
    assert both.weight(2, 3.0) == pytest.approx(0.25 * 0.729, abs=1e-15)
    assert both(2) == 0.25  # the per-version function is unchanged
    assert Exponential(0.5).weight(2, 1e6) == 0.25
    assert Polynomial(0.5).weight(3, 50.0) == 0.5  # the others ignore the age
    assert "0.9^a" in both.describe()


def test_too_stale_versions_then_seconds():
    assert too_stale(3, 100.0, 2, None) == "staleness > 2"
    assert too_stale(1, 2.5, 2, 2.0) == "staleness > 2s"
    assert too_stale(1, 2.0, 2, 2.0) is None  # not older than the limit
    assert too_stale(9, 9.0, None, None) is None


def test_fedbuff_and_fedasync_weigh_by_age():
    """FedAsync: α_t = 0.5 · 0.5^1 · 0.8^2 = 0.16; FedBuff (K = 1): w = 0.5 · 0.64."""
    decay = Exponential(0.5, 0.8)
    mixed = FedAsync(alpha=0.5, staleness=decay)
    update = _update([1.0], [0.0], staleness=1, age=2.0)
    out = mixed.aggregate_updates(torch.zeros(1), [update])
    assert update.weight == pytest.approx(0.16) and out.tolist() == pytest.approx([0.16])
    buffered = FedBuff(buffer_size=1, staleness=decay)
    update = _update([2.0], [0.0], staleness=1, age=2.0)
    out = buffered.aggregate_updates(torch.zeros(1), [update])
    assert update.weight == pytest.approx(0.32) and out.tolist() == pytest.approx([0.64])


# --------------------------------------------------------------------------
# aggregation_delay on a hand-made timeline
# --------------------------------------------------------------------------


def test_aggregation_delay_on_a_hand_made_timeline():
    """K = 3, min_updates = 2, D = 5 s, s = 1, Δ = 1 each (count normalisation: the mean).

    t = 1: a (waiting since 1; one update: no timer); t = 2: b → timer at 6.
    t = 6: the timer flushes [a, b]. t = 10: c (since 10); t = 16: d arrives after 10 + 5
    with the buffer at 2: flushed at once. t = 20, 21, 22: e, f, g fill the buffer first.
    """
    strategy = FedBuff(buffer_size=3, aggregation_delay=5.0, min_updates=2, staleness=Constant())
    clock = strategy.clock
    model = torch.zeros(1)

    def arrive(at, value):
        clock.now = at
        return strategy.aggregate_updates(model, [_update([value], [0.0])])

    assert arrive(1.0, 1.0) is None and strategy.next_timer() == math.inf
    assert arrive(2.0, 3.0) is None and strategy.next_timer() == 6.0
    clock.now = 6.0
    assert strategy.on_timer(model).tolist() == [2.0]  # mean of 1 and 3
    assert strategy.next_timer() == math.inf
    assert arrive(10.0, 4.0) is None
    assert arrive(16.0, 6.0).tolist() == [5.0]  # waited 6 s ≥ 5 with 2 updates
    assert arrive(20.0, 1.0) is None and arrive(21.0, 1.0) is None
    assert strategy.next_timer() == 25.0
    assert arrive(22.0, 4.0).tolist() == [2.0]  # full: K = 3
    assert strategy.next_timer() == math.inf
    sync = FedBuff(buffer_size=3, aggregation_delay=5.0, mode="sync")
    assert sync.next_timer() == math.inf
    with pytest.raises(ValueError, match="min_updates must be in"):
        FedBuff(buffer_size=2, min_updates=3)


def test_clocks_say_when_an_event_comes_first(monkeypatch):
    """Virtual: at ≤ every possible delivery (ties: the event). Wall: once that many seconds ran."""
    clock = VirtualClock(DelayModel(speed=make_distribution("constant", value=0.1)))
    arrived = Task(task_id=0, client_id=0, node_id=0, index=0, dispatch_version=0,
                   dispatch_time=0.0, num_examples=1, epochs=1, min_epochs=1, bytes_down=0,
                   lr=None, seed=0, finish_time=4.0, failure="x")
    pending = Task(task_id=1, client_id=1, node_id=0, index=0, dispatch_version=0,
                   dispatch_time=0.0, num_examples=1, epochs=1, min_epochs=1, bytes_down=0,
                   lr=None, seed=0, earliest_finish=3.0)
    assert clock.reached(3.0, [arrived, pending]) and not clock.reached(3.5, [arrived, pending])
    assert clock.reached(4.0, [arrived]) and clock.reached(1e9, [])
    clock.move_to(3.0)
    assert clock.now == 3.0
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    wall = WallClock()
    wall.start()
    now[0] = 102.0
    assert wall.reached(2.0, [pending]) and not wall.reached(2.5, [])
    wall.move_to(2.0)
    assert wall.now == 2.0


# --------------------------------------------------------------------------
# In a run (virtual clock): exact times from the rows
# --------------------------------------------------------------------------

FIXED_DELAYS = {
    "delay.speed.distribution": "constant",
    "delay.speed.value": 0.01,
    "delay.speed.shape": None,
    "delay.speed.scale": None,
    "delay.speed.cap": None,
    "delay.jitter": 0.0,
    "evaluation.every": 1,
}


def _version_times(recorder) -> dict[int, float]:
    """When each version was made: its first metrics.csv row (evaluation.every = 1)."""
    times: dict[int, float] = {}
    for row in recorder.evaluations:
        times.setdefault(int(row["version"]), row["virtual_time"])
    return times


def test_timer_flushes_make_versions_at_first_arrival_plus_delay():
    """K = 50 never fills: version v is made at (first arrival at version v − 1) + D, D = 0.3 s."""
    cfg = config(**{**TINY_OVERRIDES, **FIXED_DELAYS, "strategy.buffer_size": 50,
                    "strategy.aggregation_delay": 0.3, "strategy.min_updates": 1})
    _, strategy, recorder = run(cfg)
    times = _version_times(recorder)
    assert strategy.version == 6 and sorted(times) == list(range(7))
    for version in range(1, 7):
        first = min(r["arrival_time"] for r in recorder.updates if r["arrival_version"] == version - 1)
        assert times[version] == first + 0.3
    sizes = [sum(r["arrival_version"] == v for r in recorder.updates) for v in range(6)]
    assert all(n >= 1 for n in sizes) and max(sizes) < 50


def test_staleness_in_seconds_drops_old_updates_and_decays_the_rest():
    """Each row's age = arrival − time its dispatch version was made: > 4 s dropped with
    'staleness > 4s'; the others weigh 0.9^τ · 0.5^age."""
    cfg = config(**{**TINY_OVERRIDES, **FIXED_DELAYS, "strategy.max_staleness_seconds": 4.0,
                    "strategy.staleness.name": "exponential", "strategy.staleness.w": 0.9,
                    "strategy.staleness.w_per_second": 0.5, "stop.num_updates": 10})
    _, strategy, recorder = run(cfg)
    times = _version_times(recorder)
    dropped = 0
    for row in recorder.updates:
        age = row["arrival_time"] - times[row["dispatch_version"]]
        if age > 4.0:
            dropped += 1
            assert row["reason"] == "staleness > 4s" and row["weight"] == ""
        else:
            assert row["accepted"] and row["weight"] == pytest.approx(
                0.9 ** row["staleness"] * 0.5 ** age, rel=1e-12
            )
    assert dropped > 0 and recorder.evaluations[-1]["dropped"] == dropped
    assert strategy.version == 10


def test_a_limit_below_every_task_duration_stops_the_run():
    """Tasks take over 1.6 s; with a 0.5 s limit nothing is merged: the run stops after
    10·C = 30 updates in a row were dropped, at version 0."""
    cfg = config(**{**TINY_OVERRIDES, **FIXED_DELAYS, "strategy.max_staleness_seconds": 0.5})
    _, strategy, recorder = run(cfg)
    assert strategy.version == 0 and len(recorder.updates) == 30
    assert strategy.stop_reason == "30 updates in a row staleness > 0.5s"
    assert all(r["reason"] == "staleness > 0.5s" for r in recorder.updates)


def test_timing_config_errors():
    with pytest.raises(ConfigError, match="strategy.aggregation_delay: flushes a FedBuff buffer"):
        config(**{"strategy.name": "fedasync", "strategy.aggregation_delay": 1.0})
    with pytest.raises(ConfigError, match="strategy.aggregation_delay: .*got fedbuff, sync"):
        config(**{"strategy.mode": "sync", "strategy.aggregation_delay": 1.0})
    with pytest.raises(ConfigError, match=r"strategy.min_updates: must be <= strategy.buffer_size \(5\)"):
        config(**{"strategy.aggregation_delay": 1.0, "strategy.min_updates": 6})
    with pytest.raises(ConfigError, match="strategy.min_updates: only used with strategy.aggregation_delay"):
        config(**{"strategy.min_updates": 2})
    with pytest.raises(ConfigError, match="strategy.staleness.w_per_second: .*got polynomial"):
        config(**{"strategy.staleness.w_per_second": 0.9})
    with pytest.raises(ConfigError, match="strategy.max_staleness_seconds: must be > 0"):
        config(**{"strategy.max_staleness_seconds": 0})
