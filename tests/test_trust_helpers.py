"""Trust in aggregation: quarantine set aside, trust weights, scores folded into trust."""

from __future__ import annotations

import pytest
import torch

from fedstale.aggregation.trust import TrustTracker
from fedstale.strategies import FedBuff
from fedstale.strategies.task import ClientUpdate, Task
from fedstale.strategies.trust_helpers import score, set_aside_quarantined, trust_cell, trust_weight


def _update(client_id: int, delta: list[float]) -> ClientUpdate:
    task = Task(
        task_id=client_id, client_id=client_id, node_id=0, index=0, dispatch_version=0, dispatch_time=0.0,
        num_examples=1, epochs=1.0, min_epochs=1.0, bytes_down=0, lr=None, seed=0,
    )
    return ClientUpdate(task=task, params=torch.tensor(delta), base=torch.zeros(len(delta)), staleness=0, num_examples=1)


def _tracker() -> TrustTracker:
    tracker = TrustTracker(smoothing=0.5, quarantine_below=0.3, recover_above=0.6)
    tracker.observe(1, 0.0)  # T = 0.5·1 + 0.5·0 = 0.5
    tracker.observe(2, 0.0)
    tracker.observe(2, 0.0)  # T = 0.25 < 0.3: quarantined
    return tracker


def test_without_trust_everyone_counts_fully():
    updates = [_update(1, [1.0]), _update(2, [2.0])]
    assert set_aside_quarantined(None, updates) == (updates, [])
    assert trust_weight(None, updates[0]) == 1.0 and trust_cell(None, 1) == ""
    score(None, updates, torch.ones(2, 1))  # nothing to do


def test_quarantined_updates_are_set_aside_and_weights_are_trust():
    tracker = _tracker()
    updates = [_update(0, [1.0]), _update(1, [1.0]), _update(2, [1.0])]
    active, held = set_aside_quarantined(tracker, updates)
    assert [u.task.client_id for u in active] == [0, 1] and [u.task.client_id for u in held] == [2]
    assert held[0].accepted is False and held[0].reason == "quarantined (trust 0.250)" and held[0].weight == 0.0
    assert [trust_weight(tracker, u) for u in updates] == [1.0, 0.5, 0.0]
    assert trust_cell(tracker, 2) == 0.25


def test_scores_fold_agreement_with_the_reference_into_trust():
    """An update along the reference median scores 1 (T stays 1), the opposite one 0 (T halves)."""
    tracker = TrustTracker(smoothing=0.5, quarantine_below=0.2, recover_above=0.4)
    reference = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    score(tracker, [_update(0, [1.0, 0.0]), _update(1, [-1.0, 0.0])], reference)
    assert tracker.trust(0) == pytest.approx(1.0) and tracker.trust(1) == pytest.approx(0.5)


def test_strategies_reach_the_helpers_through_their_hooks():
    strategy = FedBuff(trust=TrustTracker(smoothing=0.5, quarantine_below=0.3, recover_above=0.6))
    strategy.trust = _tracker()  # the constructor resets the tracker it is given
    updates = [_update(1, [1.0]), _update(2, [1.0])]
    active, held = strategy._set_aside_quarantined(updates)  # pylint: disable=protected-access
    assert (len(active), len(held)) == (1, 1)
    assert strategy._trust_weight(updates[0]) == 0.5  # pylint: disable=protected-access
