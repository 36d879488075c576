"""The fairness module: held-out split per client, summary of per-client accuracies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstale.fairness import held_out_split, jain_index, summarize, worst_mean


def test_summary_matches_a_hand_computation():
    """Ten clients: 0.5, 0.6, ..., 0.9 and five at 1.0.

    Σx = 3.5 + 5 = 8.5, mean 0.85; Σx² = 0.25+0.36+0.49+0.64+0.81 + 5 = 7.55;
    variance 7.55/10 − 0.85² = 0.755 − 0.7225 = 0.0325, std 0.18028;
    worst 10 % = 1 client = 0.5; Jain = 8.5² / (10 · 7.55) = 72.25/75.5 = 0.956954.
    """
    values = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0]
    summary = summarize(values)
    assert summary.clients == 10
    assert summary.mean == pytest.approx(0.85)
    assert summary.std == pytest.approx(math.sqrt(0.0325))
    assert summary.std == pytest.approx(0.180278, abs=1e-6)
    assert summary.worst_mean == pytest.approx(0.5)
    assert summary.jain == pytest.approx(72.25 / 75.5)
    assert summary.jain == pytest.approx(0.956954, abs=1e-6)


def test_worst_group_rounds_up_and_jain_bounds():
    # 11 clients: ceil(1.1) = 2 worst -> (0.1 + 0.2) / 2
    values = [0.1, 0.2] + [0.9] * 9
    assert worst_mean(values) == pytest.approx(0.15)
    # 20 clients: exactly 2 worst
    assert worst_mean([0.3, 0.4] + [1.0] * 18) == pytest.approx(0.35)
    assert jain_index([0.7] * 5) == pytest.approx(1.0)
    assert jain_index([1.0, 0, 0, 0]) == pytest.approx(0.25)  # 1/n
    assert jain_index([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="no per-client accuracy"):
        summarize([])
    with pytest.raises(ValueError, match="non-negative"):
        jain_index([0.5, -0.1])


def test_held_out_split_is_seeded_once_per_client():
    train, held = held_out_split(50, 0.2, seed=0, client_id=3)
    assert len(held) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(50))
    again_train, again_held = held_out_split(50, 0.2, seed=0, client_id=3)
    assert again_held.tolist() == held.tolist() and again_train.tolist() == train.tolist()
    # the same permutation numpy draws for (seed, 3, client): first 10 are held out
    expected = np.sort(np.random.default_rng([0, 3, 3]).permutation(50)[:10])
    assert held.tolist() == expected.tolist()
    assert held_out_split(50, 0.2, seed=0, client_id=4)[1].tolist() != held.tolist()
    assert held_out_split(50, 0.2, seed=1, client_id=3)[1].tolist() != held.tolist()
    # never an empty part
    assert [len(p) for p in held_out_split(3, 0.01, 0, 0)] == [2, 1]
    assert [len(p) for p in held_out_split(3, 0.99, 0, 0)] == [1, 2]
    with pytest.raises(ValueError, match="fraction"):
        held_out_split(10, 1.0, 0, 0)
    with pytest.raises(ValueError, match="at least 2 examples"):
        held_out_split(1, 0.5, 0, 0)
