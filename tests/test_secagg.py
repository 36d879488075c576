"""Simulated secure aggregation: fixed point, masks that cancel, dropout, the strategy.

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_async_secure_fedbuff_learns | final accuracy | 0,1,2,3,4 | 0.603 | >= 0.5 | 0.103 |"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.client import NumPyClient

from fedstale.aggregation.secagg import (
    MASKED_KEY,
    SecAggError,
    dequantize,
    fixed_point_bound,
    mask_update,
    member_mask,
    quantize,
    remove_dropped_masks,
)
from fedstale.aggregation.vectors import UpdateError
from fedstale.client import build_client_app
from fedstale.client.secagg import secagg_mod
from fedstale.config import ConfigError
from fedstale.simulation.local_grid import LocalGrid, _ensure_task_identity
from fedstale.strategies import SecAggFedBuff
from fedstale.strategies.versions import GlobalModel
from tests.helpers import config, run

RNG = np.random.default_rng(0)
DELTAS = [RNG.normal(0, 0.1, 1000) for _ in range(5)]


def _masked(indices=range(5), bits=16, seed=7, group=3):
    return {i: mask_update(DELTAS[i], seed, group, i, 5, bits) for i in indices}


def test_quantize_round_trips_within_half_a_step():
    q = quantize(DELTAS[0], 16, 5)
    assert q.dtype == np.uint32
    assert np.max(np.abs(dequantize(q, 16) - DELTAS[0])) <= 2.0**-17


def test_quantize_refuses_values_that_could_overflow_the_sum():
    assert fixed_point_bound(16, 4) == 2.0**31 / 2.0**16 / 4
    with pytest.raises(SecAggError, match="precision_bits=16, 4 members"):
        quantize(np.array([0.0, 8192.0]), 16, 4)


def test_member_masks_cancel_exactly():
    total = sum((member_mask(7, 3, i, 5, 1000) for i in range(5)), np.zeros(1000, np.uint32))
    assert np.array_equal(total, np.zeros(1000, np.uint32))


def test_masked_sum_is_the_sum_of_the_quantised_updates_exactly():
    masked = _masked()
    total = sum(masked.values(), np.zeros(1000, np.uint32))
    exact = sum((quantize(d, 16, 5) for d in DELTAS), np.zeros(1000, np.uint32))
    assert np.array_equal(total, exact)
    assert np.max(np.abs(dequantize(total, 16) - sum(DELTAS))) <= 5 * 2.0**-17


def test_one_masked_update_reveals_nothing_useful():
    """A masked update is uniform over uint32: uncorrelated with the update."""
    masked = _masked([0])[0].astype(np.float64)
    assert abs(np.corrcoef(masked, DELTAS[0])[0, 1]) < 0.15
    assert masked.mean() == pytest.approx(2**31, rel=0.05)


def test_dropped_members_masks_are_removed_from_the_survivors_sum():
    masked = _masked([0, 2, 3])
    total = sum(masked.values(), np.zeros(1000, np.uint32))
    recovered = remove_dropped_masks(total, 7, 3, [0, 2, 3], [1, 4])
    exact = sum((quantize(DELTAS[i], 16, 5) for i in (0, 2, 3)), np.zeros(1000, np.uint32))
    assert np.array_equal(recovered, exact)
    assert not np.array_equal(total, exact)


class _AddOne(NumPyClient):
    def __init__(self, context):
        del context

    def fit(self, parameters, config):
        return [p + 0.25 for p in parameters], 10, {}


def _through_app(config: dict, sent: np.ndarray) -> Message:
    _ensure_task_identity()
    grid = LocalGrid(build_client_app(_AddOne, train_mods=[secagg_mod]), num_nodes=1)
    message = Message(
        RecordDict({"arrays": ArrayRecord({"w": Array(sent)}), "config": ConfigRecord(config)}),
        dst_node_id=next(iter(grid.get_node_ids())),
        message_type=MessageType.TRAIN,
    )
    return next(iter(grid.pull_messages(list(grid.push_messages([message])))))


def test_the_client_mod_sends_only_the_masked_vector():
    slot = {"secagg-group": 2, "secagg-index": 1, "secagg-size": 3, "secagg-bits": 16, "secagg-seed": 5}
    reply = _through_app(slot, np.zeros((2, 3), np.float32))
    record = next(iter(reply.content.array_records.values()))
    assert list(record.keys()) == [MASKED_KEY]
    expected = mask_update(np.full(6, 0.25), 5, 2, 1, 3, 16)
    assert np.array_equal(record[MASKED_KEY].numpy(), expected)
    plain = _through_app({}, np.zeros((2, 3), np.float32))
    assert list(next(iter(plain.content.array_records.values())).keys()) == ["w"]


def test_the_client_mod_turns_an_overflowing_update_into_an_error_reply():
    """Δ = 0.25 with 24 bits: bound 2^31/(2^24·K) = 128/K, so K = 2 fits and K = 1000 does not."""
    slot = {"secagg-group": 0, "secagg-index": 0, "secagg-size": 2, "secagg-bits": 24, "secagg-seed": 5}
    assert not _through_app(slot, np.zeros(3, np.float32)).has_error()
    reply = _through_app({**slot, "secagg-size": 1000}, np.zeros(3, np.float32))
    assert reply.has_error() and "fixed-point range" in reply.error.reason


def test_strategy_rejects_a_plaintext_or_misshaped_reply():
    strategy = SecAggFedBuff(buffer_size=2)
    strategy.global_model = GlobalModel(ArrayRecord({"w": Array(np.zeros(4, np.float32))}))
    with pytest.raises(UpdateError, match="expects one array"):
        strategy.decode_update(None, ArrayRecord({"w": Array(np.zeros(4, np.float32))}))
    with pytest.raises(UpdateError, match="must be uint32 of shape"):
        strategy.decode_update(None, ArrayRecord({MASKED_KEY: Array(np.zeros(3, np.uint32))}))


def test_sync_rounds_with_secure_aggregation_match_plain_fedbuff():
    """A round is a group; τ = 0 so the step is FedBuff's, up to 16-bit quantisation."""
    plain, _, plain_rec = run(config(strategy__mode="sync", stop__num_updates=3, evaluation__every=3))
    secure, strategy, rec = run(
        config(strategy__mode="sync", stop__num_updates=3, evaluation__every=3, privacy__secagg__enabled=True)
    )
    assert isinstance(strategy, SecAggFedBuff)
    a = np.concatenate([v.numpy().ravel() for v in plain.arrays.values()])
    b = np.concatenate([v.numpy().ravel() for v in secure.arrays.values()])
    assert np.max(np.abs(a - b)) < 1e-3
    assert np.max(np.abs(a - b)) > 0  # the server really worked on quantised masked sums
    assert [r["accuracy"] for r in rec.evaluations] == pytest.approx(
        [r["accuracy"] for r in plain_rec.evaluations], abs=0.01
    )
    wire = len(Array(np.zeros(strategy.codec.num_parameters, np.uint32)).data)
    assert {u["bytes_up"] for u in rec.updates} == {wire}  # 4 bytes a scalar (+ .npy header)


@pytest.mark.parametrize("policy", ["recover", "discard"])
def test_a_member_that_fails_is_recovered_or_its_group_discarded(policy):
    """Client 3's update overflows the fixed point (error reply) in round 1, then it is left out.

    recover: round 1 is unmasked without it (3 members); discard: round 1 is
    dropped. Later rounds have 3 members (a smaller group, not a dropout).
    """
    cfg = config(
        strategy__mode="sync", strategy__concurrency=4, data__num_clients=4, stop__num_updates=2,
        evaluation__every=100, privacy__secagg__enabled=True, privacy__secagg__dropout=policy,
        attack__name="scaling", attack__clients="3", attack__scale=1e9, comm__max_retries=0,
    )
    _, strategy, rec = run(cfg)
    failed = [u for u in rec.updates if u["client_id"] == 3]
    assert len(failed) == 1 and not failed[0]["accepted"] and "fixed-point range" in failed[0]["reason"]
    assert strategy.version == 2
    assert strategy.discarded_groups == (1 if policy == "discard" else 0)
    rounds = 2 if policy == "recover" else 3
    assert len(rec.updates) == 4 + 3 * (rounds - 1)


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"strategy__aggregator": "median"}, "cannot run; use strategy.aggregator: mean"),
        ({"strategy__name": "fedasync", "strategy__mode": "async"}, "masks cancel only in a buffer sum"),
        ({"strategy__trust__enabled": True}, "trust scores individual updates"),
        ({"compression__method": "topk"}, "dense fixed-point updates"),
        ({"attack__name": "ipm"}, "use a client-side attack"),
        ({"privacy__central__enabled": True}, "use clipping: client"),
    ],
)
def test_secagg_refuses_what_needs_individual_updates(overrides, text):
    with pytest.raises(ConfigError, match=text):
        config(privacy__secagg__enabled=True, **overrides)


def test_async_secure_fedbuff_learns(learned):
    _, strategy, rec = run(config(stop__num_updates=60, evaluation__every=60, privacy__secagg__enabled=True))
    assert strategy.version == 60
    learned.at_least("final accuracy", float(rec.evaluations[-1]["accuracy"]), 0.5)
