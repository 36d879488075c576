"""Update compression: top-k, int8, error feedback (client mod) and the server decode.

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_top10_with_error_feedback_within_three_points_of_dense_on_digits | dense accuracy, mean of last 3 | 0,1,2,3,4 | 0.920 | >= 0.9 | 0.020 |
| test_top10_with_error_feedback_within_three_points_of_dense_on_digits | top-10% - dense accuracy, mean of last 3 | 0,1,2,3,4 | -0.013 | >= -0.03 | 0.017 |
| test_top1_without_error_feedback_is_clearly_worse_on_digits | with - without error feedback accuracy, mean of last 3 | 0,1,2,3,4 | 0.057 | >= 0.04 | 0.017 |"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.client import NumPyClient

from fedstale.aggregation.compression import (
    INDICES_KEY,
    SCALE_KEY,
    SIZE_KEY,
    VALUES_KEY,
    is_compressed,
    read_compressed,
)
from fedstale.aggregation.vectors import ModelCodec, UpdateError
from fedstale.builders import build_strategy, initial_arrays, train_config
from fedstale.client import build_client_app
from fedstale.client.compression import (
    CompressionSettings,
    compress,
    compression_mod,
    quantize_int8,
)
from fedstale.client_app import app as fedstale_client_app
from fedstale.simulation.local_grid import LocalGrid, _ensure_task_identity
from fedstale.strategies import MemoryRecorder, RunAborted
from tests.helpers import config, run

SHAPES = {"w": (4, 5), "b": (5,)}
D = 25
TOPK = {"compression": "topk", "compression-ratio": 0.2, "compression-error-feedback": True,
        "compression-quantize": "none"}


def _model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


class Stepper(NumPyClient):
    """fit returns x + δ, δ ~ N(0, 1) from ``default_rng([seed, client-id])``; keeps each δ·(float32)."""

    returned: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

    def __init__(self, context):
        del context

    def fit(self, parameters, config):
        rng = np.random.default_rng([int(config["seed"]), int(config.get("client-id", 0))])
        new = [(p + rng.normal(size=p.shape)).astype(p.dtype) for p in parameters]
        Stepper.returned.append((parameters, new))
        return new, 10, {}

    def evaluate(self, parameters, config):
        return 1.0, 10, {"accuracy": 0.5}


def _train_message(cfg: dict, node: int, arrays: dict[str, np.ndarray] | None = None,
                   message_type: str = MessageType.TRAIN) -> Message:
    _ensure_task_identity()
    content = RecordDict({"config": ConfigRecord(cfg)})
    model = _model() if arrays is None else arrays
    content["arrays"] = ArrayRecord({k: Array(v.copy()) for k, v in model.items()})
    return Message(content, dst_node_id=node, message_type=message_type)


def _exchange(grid: LocalGrid, cfg: dict, message_type: str = MessageType.TRAIN) -> Message:
    message = _train_message(cfg, next(iter(grid.get_node_ids())), message_type=message_type)
    ids = list(grid.push_messages([message]))
    return next(iter(grid.pull_messages(ids)))


def _true_delta() -> np.ndarray:
    """Δ = returned − sent of Stepper's last fit, flat in float64."""
    sent, new = Stepper.returned[-1]
    return np.concatenate([(n.astype(np.float64) - s.astype(np.float64)).ravel()
                           for s, n in zip(sent, new)])


def _decoded(reply: Message) -> np.ndarray:
    record = next(iter(reply.content.array_records.values()))
    return read_compressed(record, D).numpy().astype(np.float64)


# ----------------------------------------------------------------------------
# Encoding: top-k and int8
# ----------------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_largest_magnitudes():
    rng = np.random.default_rng(1)
    magnitudes = rng.permutation(np.arange(1, 1001, dtype=np.float64)) / 7.0
    vector = magnitudes * rng.choice([-1.0, 1.0], size=1000)
    record, decoded = compress(vector, CompressionSettings("topk", ratio=0.03))
    indices = record[INDICES_KEY].numpy()
    assert indices.dtype == np.int32 and indices.size == 30  # k = round(0.03 · 1000)
    assert set(indices.tolist()) == set(np.argsort(-np.abs(vector))[:30].tolist())
    assert np.all(np.diff(indices) > 0)  # ascending
    assert record[VALUES_KEY].numpy().dtype == np.float32
    np.testing.assert_array_equal(record[VALUES_KEY].numpy(), vector[indices].astype(np.float32))
    assert record[SIZE_KEY].numpy().tolist() == [1000]
    assert np.abs(decoded[indices]).min() > np.abs(np.delete(vector, indices)).max()
    assert np.count_nonzero(decoded) == 30
    # k = max(1, round(ratio · d)): a tiny ratio still sends one coordinate.
    record, _ = compress(vector, CompressionSettings("topk", ratio=1e-4))
    assert record[INDICES_KEY].numpy().tolist() == [int(np.argmax(np.abs(vector)))]


@pytest.mark.parametrize("method", ["none", "topk"])
def test_int8_reconstruction_error_is_at_most_half_a_step(method):
    vector = np.random.default_rng(2).normal(size=5000) * 0.03
    record, decoded = compress(vector, CompressionSettings(method, ratio=0.1, quantize="int8"))
    scale = float(record[SCALE_KEY].numpy()[0])
    if method == "none":
        assert INDICES_KEY not in record  # every coordinate, in order: no indices on the wire
        kept = np.arange(5000)
    else:
        kept = record[INDICES_KEY].numpy()
        assert kept.size == 500
    assert record[VALUES_KEY].numpy().dtype == np.int8
    assert scale == np.float32(np.abs(vector[kept]).max() / 127)
    assert np.abs(record[VALUES_KEY].numpy()).max() == 127
    error = np.abs(vector[kept] - decoded[kept])
    # ≤ s/2 from rounding to a level, plus float32 rounding of level · s.
    assert error.max() <= scale / 2 + np.spacing(np.float32(127 * scale))
    assert error.max() > scale / 4  # really quantised
    assert quantize_int8(np.zeros(3))[1] == 0.0  # a zero update has scale 0


# ----------------------------------------------------------------------------
# The client mod: error feedback, per virtual client
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_error_feedback_keeps_the_residual_per_virtual_client(quantize):
    """e ← (e + Δ) − Δ̂ exactly, over two updates of client 0; client 1 on the same node has its own e."""
    grid = LocalGrid(build_client_app(Stepper, train_mods=[compression_mod]), num_nodes=1)
    state = next(iter(grid.contexts.values())).state
    base = {**TOPK, "compression-quantize": quantize, "num-clients": 2}
    Stepper.returned.clear()

    def residual(client_id: int) -> np.ndarray:
        return state[f"client.{client_id}.compression-residual"]["residual"].numpy()

    reply = _exchange(grid, {**base, "seed": 1, "client-id": 0})
    delta1, sent1 = _true_delta(), _decoded(reply)
    assert np.count_nonzero(sent1) == 5  # k = round(0.2 · 25)
    np.testing.assert_array_equal(residual(0), delta1 - sent1)
    first = residual(0).copy()

    reply = _exchange(grid, {**base, "seed": 2, "client-id": 1})
    np.testing.assert_array_equal(residual(1), _true_delta() - _decoded(reply))
    np.testing.assert_array_equal(residual(0), first)  # untouched by client 1

    reply = _exchange(grid, {**base, "seed": 3, "client-id": 0})
    delta2, sent2 = _true_delta(), _decoded(reply)
    np.testing.assert_array_equal(residual(0), (first + delta2) - sent2)
    # What was kept back is sent later: the top-k of e + Δ, not of Δ.
    kept = np.flatnonzero(sent2)
    assert set(kept.tolist()) == set(np.argsort(-np.abs(first + delta2))[:5].tolist())
    if quantize == "none":
        np.testing.assert_array_equal(sent2[kept], (first + delta2)[kept].astype(np.float32))


def test_without_error_feedback_nothing_is_kept():
    grid = LocalGrid(build_client_app(Stepper, train_mods=[compression_mod]), num_nodes=1)
    cfg = {**TOPK, "compression-error-feedback": False, "seed": 1, "client-id": 0, "num-clients": 1}
    Stepper.returned.clear()
    reply = _exchange(grid, cfg)
    delta = _true_delta()
    kept = np.argsort(-np.abs(delta))[:5]
    np.testing.assert_array_equal(_decoded(reply)[kept], delta[kept].astype(np.float32))
    assert not any("compression" in key for key in next(iter(grid.contexts.values())).state)


def test_other_messages_and_uncompressed_runs_pass_through():
    """No directives: the dense reply; EVALUATE (the mod also wraps every message type here
    through ``mods=``): untouched; an error reply: the same object; an unknown method: an error reply."""
    grid = LocalGrid(build_client_app(Stepper, train_mods=[compression_mod],
                                      mods=[compression_mod]), num_nodes=1)
    Stepper.returned.clear()
    plain = _exchange(grid, {"seed": 1})
    assert list(next(iter(plain.content.array_records.values())).keys()) == ["w", "b"]
    evaluated = _exchange(grid, {**TOPK, "seed": 1}, MessageType.EVALUATE)
    assert dict(evaluated.content.metric_records["metrics"]) == {
        "accuracy": 0.5, "loss": 1.0, "num-examples": 10}
    message = _train_message({**TOPK, "seed": 1}, 0)
    error = Message(Error(code=2, reason="inner failure"), reply_to=message)
    assert compression_mod(message, None, lambda m, c: error) is error
    bad = _exchange(grid, {**TOPK, "compression": "gzip", "seed": 1})
    assert bad.has_error()
    assert "ValueError: unknown compression 'gzip'; accepted: none, topk" in bad.error.reason


def test_train_config_sends_directives_only_when_compression_is_on():
    assert not any(k.startswith("compression") for k in train_config(config("default")))
    on = train_config(config("default", compression__method="topk", compression__ratio=0.05))
    assert {k: v for k, v in on.items() if k.startswith("compression")} == {
        "compression": "topk", "compression-ratio": 0.05, "compression-error-feedback": True,
        "compression-quantize": "none"}
    int8 = train_config(config("default", compression__quantize="int8"))
    assert (int8["compression"], int8["compression-quantize"]) == ("none", "int8")


def test_attack_then_compression_in_fedstale_client_app():
    """fedstale's ClientApp poisons first (attack_mod inside) and compresses last.

    Real digits training, same seed: with ``scaling`` ×3 the top-10 % are
    those of the honest update and the values are 3× the honest ones. In the
    opposite order the attack would meet a compressed reply and fail.
    """
    cfg = {"num-clients": 20, "dataset": "digits", "model": "cnn", "lr": 0.05,
           "local-epochs": 1, "batch-size": 16, "client-id": 3, "seed": 5,
           **{**TOPK, "compression-ratio": 0.1, "compression-error-feedback": False}}
    arrays = initial_arrays(config("default"))
    model = {k: v.numpy() for k, v in arrays.items()}
    d = ModelCodec(arrays).num_parameters

    def send(extra: dict) -> np.ndarray:
        grid = LocalGrid(fedstale_client_app, num_nodes=1)
        message = _train_message({**cfg, **extra}, next(iter(grid.get_node_ids())), model)
        reply = next(iter(grid.pull_messages(grid.push_messages([message]))))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        return read_compressed(next(iter(reply.content.array_records.values())), d).numpy()

    honest = send({})
    poisoned = send({"attack": "scaling", "attack-scale": 3.0})
    assert np.count_nonzero(honest) == round(0.1 * d)
    np.testing.assert_array_equal(np.flatnonzero(poisoned), np.flatnonzero(honest))
    np.testing.assert_allclose(poisoned, 3.0 * honest, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------
# Server: decode and reject
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "quantize"), [("topk", "none"), ("topk", "int8"), ("none", "int8")])
def test_server_decode_round_trip_equals_the_transmitted_update(method, quantize):
    vector = np.random.default_rng(3).normal(size=D)
    record, decoded = compress(vector, CompressionSettings(method, ratio=0.2, quantize=quantize))
    assert is_compressed(record) and not is_compressed(ArrayRecord({"w": Array(np.zeros(2))}))
    server = read_compressed(record, D)
    assert server.dtype == torch.float32
    np.testing.assert_array_equal(server.numpy().astype(np.float64), decoded)


def _record(**arrays: np.ndarray | None) -> ArrayRecord:
    good = {SIZE_KEY: np.array([D], np.int64), INDICES_KEY: np.array([0, 7, 3], np.int32),
            VALUES_KEY: np.array([1.0, -2.0, 0.5], np.float32)}
    good.update({f"fedstale.delta.{k}": v for k, v in arrays.items()})
    return ArrayRecord({k: Array(v) for k, v in good.items() if v is not None})


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_record(indices=np.array([0, 25, 3], np.int32)),
         "'fedstale.delta.indices' has indices outside [0, 25)"),
        (_record(indices=np.array([0, -1, 3], np.int32)),
         "'fedstale.delta.indices' has indices outside [0, 25)"),
        (_record(indices=np.array([0, 7, 7], np.int32)),
         "'fedstale.delta.indices' has duplicated indices"),
        (_record(indices=np.array([0, 7, 3], np.int64)),
         "'fedstale.delta.indices' has dtype int64, expected int32"),
        (_record(size=np.array([26], np.int64)),
         "'fedstale.delta.size' is [26], the model has 25 coordinates"),
        (_record(size=None), "compressed update has no 'fedstale.delta.size'"),
        (_record(values=np.array([1.0, np.nan, 0.5], np.float32)),
         "'fedstale.delta.values' has NaN or infinite values"),
        (_record(values=np.array([1.0, np.inf, 0.5], np.float32)),
         "'fedstale.delta.values' has NaN or infinite values"),
        (_record(values=np.array([1.0, 2.0], np.float32)),
         "'fedstale.delta.values' has 2 values, expected 3"),
        (_record(values=np.array([1.0, 2.0, 3.0], np.float64)),
         "'fedstale.delta.values' has dtype float64, expected float32 or int8"),
        (_record(values=np.array([1, 2, 3], np.int8)),
         "compressed update has no 'fedstale.delta.scale'"),
        (_record(values=np.array([1, 2, 3], np.int8), scale=np.array([np.nan], np.float32)),
         "'fedstale.delta.scale' must be one finite value >= 0"),
        (_record(scale=np.array([0.1], np.float32)),
         "'fedstale.delta.scale' is only for int8 'fedstale.delta.values'"),
        (_record(extra=np.zeros(2, np.float32)), "unknown key 'fedstale.delta.extra'"),
    ],
)
def test_malformed_compressed_updates_are_rejected_naming_the_key(record, reason):
    with pytest.raises(UpdateError) as info:
        read_compressed(record, D)
    assert reason in str(info.value)


class Linear(NumPyClient):
    """fit moves w halfway to a client-specific target: w − 0.5 (w − t_c)."""

    def __init__(self, context):
        self.cid = int(context.node_config["partition-id"])

    def get_properties(self, config):
        return {"num-examples": 10 + self.cid}

    def fit(self, parameters, config):
        targets = np.random.default_rng(self.cid).normal(size=(2, D))
        return [w - 0.5 * (w - t.astype(w.dtype)) for w, t in zip(parameters, targets)], 10, {}


@pytest.mark.parametrize("name", ["fedasync", "default", "fedavg", "dynamic"])
def test_every_strategy_rebuilds_x_local_from_the_dispatch_base(name):
    """Top-k with k = d is lossless up to float32: the run ends where the dense run ends.

    With 6 clients, 4 in flight, updates arrive stale; a wrong base (e.g.
    the current model) would change the result.
    """
    cfg = config(name, data__num_clients=6, strategy__concurrency=4, delay__bandwidth=float("inf"),
                 **({"strategy__buffer_size": 2} if name in ("default", "dynamic") else {}))
    initial = ArrayRecord({"a": Array(np.zeros(D, np.float32)), "b": Array(np.ones(D, np.float32))})

    def final(train: dict, mods: list) -> tuple[np.ndarray, MemoryRecorder]:
        recorder = MemoryRecorder()
        strategy = build_strategy(cfg, recorder)
        grid = LocalGrid(build_client_app(Linear, train_mods=mods), num_nodes=2)
        result = strategy.start(grid, initial, num_rounds=6, train_config=ConfigRecord(train))
        return np.concatenate([a.numpy() for a in result.arrays.values()]), recorder

    dense, dense_rec = final({}, [])
    lossless, rec = final({**TOPK, "compression-ratio": 1.0}, [compression_mod])
    if name != "fedavg":  # synchronous rounds are never stale
        assert max(r["staleness"] for r in rec.updates) >= 1
    assert [r["client_id"] for r in rec.updates] == [r["client_id"] for r in dense_rec.updates]
    assert not np.allclose(dense, 0.0)
    np.testing.assert_allclose(lossless, dense, rtol=0, atol=1e-5)
    # The wire: indices + values of all 2·D coordinates + size, vs the dense arrays.
    assert {r["bytes_up"] for r in rec.updates} == {
        sum(len(a.data) for a in compress(np.zeros(2 * D), CompressionSettings("topk", 1.0))[0].values())}


def _corrupt_mod(message, context, call_next):
    """Duplicate the first kept index of a compressed reply."""
    reply = call_next(message, context)
    record = next(iter(reply.content.array_records.values()))
    indices = record[INDICES_KEY].numpy().copy()
    indices[1] = indices[0]
    record[INDICES_KEY] = Array(indices)
    return reply


def test_a_malformed_reply_is_a_failed_update_with_the_reason():
    cfg = config("fedasync", data__num_clients=4, strategy__concurrency=2, comm__max_retries=1)
    recorder = MemoryRecorder()
    strategy = build_strategy(cfg, recorder)
    grid = LocalGrid(build_client_app(Linear, train_mods=[_corrupt_mod, compression_mod]), num_nodes=2)
    initial = ArrayRecord({"a": Array(np.zeros(D, np.float32)), "b": Array(np.ones(D, np.float32))})
    reason = "malformed update: compressed update: 'fedstale.delta.indices' has duplicated indices"
    # every client sends it, so the run stops after 3 clients (comm.fail_fast)
    with pytest.raises(RunAborted, match=re.escape(reason)):
        strategy.start(grid, initial, num_rounds=3, train_config=ConfigRecord(TOPK))
    assert recorder.updates
    assert {r["reason"] for r in recorder.updates} == {reason}
    assert not any(r["accepted"] for r in recorder.updates)


# ----------------------------------------------------------------------------
# Digits: accuracy and bytes
# ----------------------------------------------------------------------------

BUDGET = 100  # FedBuff versions (K = 5): 500 client updates


def _final(recorder: MemoryRecorder) -> dict:
    return recorder.evaluations[-1]


EVERY = 20
"""Evaluate every 20 versions; accuracy comparisons average the last 3
evaluations (versions 60, 80, 100), steadier than the last one alone."""


def _late_accuracy(recorder: MemoryRecorder) -> float:
    return sum(float(r["accuracy"]) for r in recorder.evaluations[-3:]) / 3


def _wire_bytes(d: int, settings: CompressionSettings) -> int:
    return sum(len(a.data) for a in compress(np.zeros(d), settings)[0].values())


def test_top10_with_error_feedback_within_three_points_of_dense_on_digits(learned):
    """configs/default.yaml, 500 updates: dense ~93 % (late mean); top-10 % + EF
    within 3 points of it (1.3 points behind on the worst seed), 5× fewer bytes up."""
    _, _, dense = run(config("default", stop__num_updates=BUDGET, evaluation__every=EVERY))
    _, strategy, topk = run(config("compression", stop__num_updates=BUDGET, evaluation__every=EVERY))
    d, dense_bytes = strategy.codec.num_parameters, strategy.codec.nbytes
    assert _final(dense)["updates"] == _final(topk)["updates"] == 5 * BUDGET
    learned.at_least("dense accuracy, mean of last 3", _late_accuracy(dense), 0.90)
    learned.at_least("top-10% - dense accuracy, mean of last 3", _late_accuracy(topk) - _late_accuracy(dense), -0.03)
    assert _final(dense)["compression_ratio"] == 1.0
    wire = _wire_bytes(d, CompressionSettings("topk", 0.1))
    assert {r["bytes_up"] for r in topk.updates} == {wire}
    assert {r["bytes_down"] for r in topk.updates} == {dense_bytes}
    assert _final(topk)["bytes_up"] == 5 * BUDGET * wire
    assert _final(topk)["compression_ratio"] == pytest.approx(dense_bytes / wire)
    assert 4.9 < _final(topk)["compression_ratio"] <= 5.0  # d·4 / (0.1·d·8), less headers


def test_int8_ratio_in_metrics():
    """int8 values: 5 bytes per kept coordinate (indices + level), ratio ≈ 8 less headers."""
    _, strategy, rec = run(config("compression", compression__quantize="int8",
                                  stop__num_updates=2, evaluation__every=2))
    wire = _wire_bytes(strategy.codec.num_parameters, CompressionSettings("topk", 0.1, quantize="int8"))
    assert {r["bytes_up"] for r in rec.updates} == {wire}
    assert _final(rec)["compression_ratio"] == pytest.approx(strategy.codec.nbytes / wire)
    assert 7.7 < _final(rec)["compression_ratio"] <= 8.0


def test_top1_without_error_feedback_is_clearly_worse_on_digits(learned):
    """Top-1 %, 500 updates: error feedback is worth at least 4 points (5.7 on the worst seed)."""
    finals = {}
    for feedback in (True, False):
        _, _, rec = run(config("compression", compression__ratio=0.01,
                               compression__error_feedback=feedback,
                               stop__num_updates=BUDGET, evaluation__every=EVERY))
        finals[feedback] = _late_accuracy(rec)
    learned.at_least("with - without error feedback accuracy, mean of last 3", finals[True] - finals[False], 0.04)
