"""Trust scores, quarantine, per-update filters and the choice of attackers."""

from __future__ import annotations

import math

import pytest
import torch

from fedstale.aggregation.filters import NormBound, ValidationCheck
from fedstale.aggregation.trust import TrustTracker, agreement_score, reference_statistics
from fedstale.simulation.adversary import Adversary, choose_malicious


def test_agreement_score_formula():
    """clip(cos / c̃, 0, 1) · min(1, ν/‖Δ‖) on hand-computed vectors (c̃ = 1 here)."""
    reference = torch.tensor([1.0, 0.0])
    assert agreement_score(torch.tensor([1.0, 1.0]), reference, 10.0) == pytest.approx(
        1 / math.sqrt(2)
    )
    # Same direction, 4x the typical norm 0.5: cos 1 x 0.5/2.
    assert agreement_score(torch.tensor([2.0, 0.0]), reference, 0.5) == pytest.approx(0.25)
    # Opposite direction and orthogonal ones score 0.
    assert agreement_score(torch.tensor([-1.0, 0.0]), reference, 1.0) == 0.0
    assert agreement_score(torch.tensor([0.0, 3.0]), reference, 1.0) == 0.0
    assert agreement_score(torch.zeros(2), reference, 1.0) == 0.0


def test_agreement_is_relative_to_the_typical_cosine():
    """An update as aligned as a typical one scores 1; half as aligned, 0.5."""
    reference = torch.tensor([1.0, 0.0])
    half = torch.tensor([0.5, math.sqrt(0.75)])  # cos 0.5, norm 1
    assert agreement_score(half, reference, 1.0, typical_cosine=0.5) == pytest.approx(1.0)
    assert agreement_score(half, reference, 1.0, typical_cosine=0.25) == pytest.approx(1.0)
    quarter = torch.tensor([0.25, math.sqrt(1 - 0.0625)])
    assert agreement_score(quarter, reference, 1.0, typical_cosine=0.5) == pytest.approx(0.5)
    # A non-positive typical cosine is floored at 1e-3, not divided by.
    assert agreement_score(quarter, reference, 1.0, typical_cosine=-0.2) == pytest.approx(1.0)


def test_reference_statistics_on_hand_computed_set():
    """r = coordinate-wise median, ν = median norm, c̃ = median cos(Δ_j, r)."""
    deltas = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    reference, typical_norm, typical_cosine = reference_statistics(deltas)
    assert reference.tolist() == [1.0, 1.0]
    assert typical_norm == pytest.approx(1.0)  # norms 1, 1, 5
    # cos to (1, 1): 1/√2, 1/√2, 7/(5√2) → median 1/√2.
    assert typical_cosine == pytest.approx(1 / math.sqrt(2))


def test_trust_smoothing_and_quarantine_hysteresis():
    """T ← λT + (1−λ)s; quarantine below 0.2, release at 0.4 (λ = 0.5)."""
    tracker = TrustTracker(smoothing=0.5, quarantine_below=0.2, recover_above=0.4)
    assert tracker.trust(7) == 1.0 and tracker.weight(7) == 1.0
    for expected in (0.5, 0.25, 0.125):
        tracker.observe(7, 0.0)
        assert tracker.trust(7) == pytest.approx(expected)
    assert tracker.is_quarantined(7) and tracker.weight(7) == 0.0
    tracker.observe(7, 0.6)  # 0.3625: above 0.2 but below 0.4 → still quarantined
    assert tracker.trust(7) == pytest.approx(0.3625)
    assert tracker.is_quarantined(7)
    tracker.observe(7, 0.6)  # 0.48125 ≥ 0.4 → released
    assert not tracker.is_quarantined(7)
    assert tracker.weight(7) == pytest.approx(0.48125)
    assert tracker.quarantined == set()
    tracker.reset()
    assert tracker.trust(7) == 1.0


def test_trust_rejects_inverted_thresholds():
    with pytest.raises(ValueError, match="recover_above .* must be >= quarantine_below"):
        TrustTracker(quarantine_below=0.5, recover_above=0.3)


def test_norm_bound_uses_the_median_of_accepted_norms():
    """Reject ‖Δ‖ > κ · median of the window, only once 3 norms are known."""
    bound = NormBound(kappa=2.0, window=3)
    big = torch.tensor([100.0])
    assert bound.check(big) is None  # no history yet
    for norm in (1.0, 3.0, 2.0):
        bound.accept(torch.tensor([norm]))
    assert bound.check(torch.tensor([4.0])) is None  # 4 ≤ 2 · 2
    assert bound.check(torch.tensor([4.5])) == "norm 4.5 > 2 x median 2"
    bound.accept(torch.tensor([10.0]))  # window now 3, 2, 10 → median 3
    assert bound.check(torch.tensor([6.0])) is None
    bound.reset()
    assert bound.check(big) is None


def test_validation_check_compares_losses():
    """Reject when L(x_new) > L(x) + ε."""
    check = ValidationCheck(0.1, loss_fn=lambda v: float(v.sum()))
    assert check.check(torch.tensor([1.0]), torch.tensor([1.05])) is None
    assert check.check(torch.tensor([1.0]), torch.tensor([1.2])) == (
        "validation loss 1.2000 > 1.0000 + 0.1"
    )


def test_choose_malicious_by_fraction_or_ids():
    """round(fraction·n) distinct ids, fixed by the seed; explicit ids win."""
    chosen = choose_malicious(20, 0.2, "", seed=0)
    assert len(chosen) == 4 and chosen <= set(range(20))
    assert choose_malicious(20, 0.2, "", seed=0) == chosen
    assert choose_malicious(20, 0.2, "", seed=1) != chosen
    assert choose_malicious(20, 0.2, " 3, 7,11", seed=0) == {3, 7, 11}
    assert choose_malicious(20, 0.0, "", seed=0) == set()


def test_adversary_directives_only_for_malicious_clients():
    params = {
        "boost": 5.0, "scale": 10.0, "sigma": 1.0, "target_label": 0,
        "trigger_size": 2, "poison_fraction": 0.5, "z": 1.5, "epsilon": 10.0,
    }
    adversary = Adversary("sign_flip", {2}, params)
    assert adversary.task_config(1) == {}
    directive = adversary.task_config(2)
    assert directive["attack"] == "sign_flip" and directive["attack-boost"] == 5.0
    assert adversary.is_malicious(2) and not adversary.is_malicious(1)
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        Adversary("nope", set(), params)
