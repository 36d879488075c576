"""The run state: the resume-point layout, and capture → restore giving back the same run."""

from __future__ import annotations

import pytest
import torch

from fedstale.builders import build_strategy, run_strategy
from fedstale.client_app import app
from fedstale.simulation.local_grid import LocalGrid
from fedstale.strategies import FedBuff, MemoryRecorder
from fedstale.strategies.run_state import DISPATCH_FIELDS, capture_run_state, restore_run_state
from tests.helpers import config

LAYOUT = {
    "strategy", "version", "model", "bases", "inflight", "next_task_id", "rng", "clock", "counters",
    "clients", "components", "result", "extra",
}
COUNTERS = [
    "_updates", "_accepted", "_dropped", "_rejected", "_failures", "_bytes_up", "_bytes_down",
    "_dense_bytes_up", "_max_client_epsilon", "_since_eval",
    "_too_stale_in_a_row",  # added with max_staleness_seconds (absent from older points: 0)
    "_last_eval_version", "_last_eval_updates", "_last_accuracy",
    "_targets_reached",  # added with evaluation.targets (absent from older points: none reached)
]
CLIENT_BOOKS = [
    "_excluded", "_retry_first", "_consecutive_failures", "_last_staleness", "_task_index",
    # added with the selection policies; a resume point without them loads (they start empty)
    "_last_duration", "_last_loss", "_last_examples",
]


class _Keep(MemoryRecorder):
    """Keeps the run state at version 4."""

    state = None

    def on_resume_point(self, version, get_state, force=False):
        if version == 4:
            self.state = get_state()


def _run(stop: int, resume=None):
    cfg = config(stop__num_updates=stop, evaluation__every=2)
    recorder = _Keep()
    strategy = build_strategy(cfg, recorder)
    result = run_strategy(strategy, LocalGrid(app, num_nodes=2), cfg, resume=resume)
    return strategy, recorder, result


def test_the_layout_is_the_resume_format_of_before_the_split():
    strategy, recorder, _ = _run(4)
    state = recorder.state
    assert set(state) == LAYOUT
    assert list(state["counters"]) == COUNTERS and list(state["clients"]) == CLIENT_BOOKS
    assert set(state["components"]) == {"trust", "adversary", "central_dp"}
    assert state["strategy"] == "FedBuff" and state["version"] == 4
    assert state["counters"]["_updates"] == 20 and state["counters"]["_last_eval_version"] == 4
    # C = 10 in flight but for the task whose update made version 4 (its slot is refilled next)
    assert all(set(t) == set(DISPATCH_FIELDS) for t in state["inflight"]) and len(state["inflight"]) == 9
    assert [t["task_id"] for t in state["inflight"]] == sorted(t["task_id"] for t in state["inflight"])
    assert set(state["bases"]) == {t["dispatch_version"] for t in state["inflight"]}
    assert state["rng"] == strategy.pool.policy.run_state()  # the run stopped at that version
    assert torch.equal(state["model"], strategy.model)


def test_a_restored_run_continues_as_the_uninterrupted_one():
    _, whole, result = _run(8)
    _, first, _ = _run(4)
    resumed, second, again = _run(8, resume=first.state)
    assert resumed.version == 8
    assert [r["task_id"] for r in second.updates] == [r["task_id"] for r in whole.updates][len(first.updates):]
    for key in result.arrays:
        assert torch.equal(torch.from_numpy(result.arrays[key].numpy()), torch.from_numpy(again.arrays[key].numpy()))


def test_a_state_of_another_strategy_is_refused():
    strategy = FedBuff()
    with pytest.raises(ValueError, match="written by FedAsync, not FedBuff"):
        restore_run_state(strategy, {"strategy": "FedAsync"})
    assert capture_run_state(strategy)["version"] == 0
