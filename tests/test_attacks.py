"""Simulated attackers: the client mod, data poisoning, omniscient attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from byzfl import ALittleIsEnough as ByzALIE
from byzfl import InnerProductManipulation as ByzIPM
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.client import NumPyClient
from torch import nn

from fedstale.client import TorchClient, build_client_app, client_fn, pick_device, train
from fedstale.client.attacks import CLIENT_ATTACKS, attack_mod
from fedstale.client.torch_client import train_settings_from
from fedstale.data import PartitionSpec, load_client_data, load_split
from fedstale.data.backdoor import (
    apply_trigger,
    attack_success_rate,
    backdoor_test_set,
    poison_examples,
)
from fedstale.models import build_model
from fedstale.simulation.local_grid import LocalGrid, _ensure_task_identity
from fedstale.simulation.omniscient import (
    OMNISCIENT_ATTACKS,
    ALittleIsEnough,
    InnerProductManipulation,
    alie,
    ipm,
)

SENT = {
    "w": np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], np.float32),
    "b": np.full(4, 5.0, np.float64),
    "steps": np.array([7], np.int64),
}
# The client returns 2·x + 1 on float arrays, so Δ = x + 1:
DELTA = {"w": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "b": [6.0, 6.0, 6.0, 6.0]}


class Affine(NumPyClient):
    """fit returns 2·x + 1 on float arrays, x + 1 on integer ones; records its configs."""

    configs: list[dict] = []

    def __init__(self, context):
        del context

    def fit(self, parameters, config):
        Affine.configs.append(dict(config))
        return [2 * p + 1 if p.dtype.kind == "f" else p + 1 for p in parameters], 10, {"m": 1.5}

    def evaluate(self, parameters, config):
        Affine.configs.append(dict(config))
        return float(parameters[0].sum()), 10, {"accuracy": 0.25}


class Failing(Affine):
    """fit raises."""

    def fit(self, parameters, config):
        raise RuntimeError("client broke")


def _message(config: dict, message_type: str = MessageType.TRAIN, node: int = 0) -> Message:
    _ensure_task_identity()
    content = RecordDict({"config": ConfigRecord(config)})
    if message_type != MessageType.QUERY:
        content["arrays"] = ArrayRecord({k: Array(v.copy()) for k, v in SENT.items()})
    message = Message(content, dst_node_id=node, message_type=message_type)
    message.metadata.__dict__["_message_id"] = "m1"
    return message


def _send(config: dict, message_type=MessageType.TRAIN, client=Affine, **app_mods) -> tuple[Message, Message]:
    """(message, reply) of one message sent through a LocalGrid with one node."""
    Affine.configs.clear()
    grid = LocalGrid(build_client_app(client, **app_mods), num_nodes=1)
    message = _message(config, message_type, next(iter(grid.get_node_ids())))
    ids = list(grid.push_messages([message]))
    return message, next(iter(grid.pull_messages(ids)))


def _arrays(reply: Message) -> dict[str, np.ndarray]:
    record = next(iter(reply.content.array_records.values()))
    return {k: record[k].numpy() for k in record.keys()}


def test_registries():
    assert list(CLIENT_ATTACKS) == [
        "sign_flip", "scaling", "model_scaling", "gaussian", "label_flip", "backdoor"
    ]
    assert OMNISCIENT_ATTACKS == {"alie": ALittleIsEnough, "ipm": InnerProductManipulation}


@pytest.mark.parametrize("wiring", ["train_mods", "mods"])
@pytest.mark.parametrize(
    ("config", "w", "b"),
    [
        # sent + f(Δ) with Δ_w = [[1,2,3],[4,5,6]], Δ_b = 6, sent_w = [[0,1,2],[3,4,5]], sent_b = 5
        ({"attack": "sign_flip", "attack-boost": 2.0},
         [[-2.0, -3.0, -4.0], [-5.0, -6.0, -7.0]], -7.0),
        ({"attack": "sign_flip"}, [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]], -1.0),
        ({"attack": "scaling", "attack-scale": 3.0}, [[3.0, 7.0, 11.0], [15.0, 19.0, 23.0]], 23.0),
        # the whole returned model ×3: x_local_w = [[1,3,5],[7,9,11]], x_local_b = 11
        ({"attack": "model_scaling", "attack-scale": 3.0}, [[3.0, 9.0, 15.0], [21.0, 27.0, 33.0]], 33.0),
        ({"attack": "backdoor", "attack-boost": 5.0}, [[5.0, 11.0, 17.0], [23.0, 29.0, 35.0]], 35.0),
        ({"attack": "label_flip"}, [[1.0, 3.0, 5.0], [7.0, 9.0, 11.0]], 11.0),
    ],
)
def test_model_poisoning_rewrites_the_float_update(wiring, config, w, b):
    """Keys, shapes and dtypes are kept; the int64 buffer is as the client returned it."""
    _, reply = _send({"seed": 3, **config}, **{wiring: [attack_mod]})
    got = _arrays(reply)
    assert list(got) == ["w", "b", "steps"]
    np.testing.assert_array_equal(got["w"], np.array(w, np.float32))
    np.testing.assert_array_equal(got["b"], np.full(4, b))
    np.testing.assert_array_equal(got["steps"], [8])
    assert [got[k].dtype for k in got] == [np.float32, np.float64, np.int64]
    assert got["w"].shape == (2, 3)
    assert reply.content.metric_records["metrics"]["m"] == 1.5


def test_gaussian_replaces_the_update_by_seeded_noise():
    _, reply = _send({"seed": 11, "attack": "gaussian", "attack-sigma": 0.5}, train_mods=[attack_mod])
    got = _arrays(reply)
    noise = np.random.default_rng([11, 7]).normal(0.0, 0.5, size=10)
    np.testing.assert_array_equal(got["w"], (SENT["w"] + noise[:6].reshape(2, 3)).astype(np.float32))
    np.testing.assert_array_equal(got["b"], SENT["b"] + noise[6:])
    np.testing.assert_array_equal(got["steps"], [8])
    _, other = _send({"seed": 12, "attack": "gaussian", "attack-sigma": 0.5}, train_mods=[attack_mod])
    assert not np.array_equal(_arrays(other)["b"], got["b"])


def _spy(reply_of):
    calls = []

    def call_next(message, context):
        calls.append((message, dict(message.content.config_records["config"])))
        return reply_of(message)

    return calls, call_next


@pytest.mark.parametrize(
    ("config", "message_type"),
    [
        ({"seed": 3}, MessageType.TRAIN),
        ({"seed": 3, "attack": "sign_flip", "attack-boost": 2.0}, MessageType.EVALUATE),
        ({"fedstale-action": "describe", "attack": "sign_flip"}, MessageType.QUERY),
    ],
)
def test_mod_passes_other_messages_through_as_is(config, message_type):
    """Honest TRAIN, EVALUATE and QUERY: call_next gets the same message, its reply is returned."""
    message = _message(config, message_type)
    sentinel = Message(RecordDict(), reply_to=message)
    calls, call_next = _spy(lambda m: sentinel)
    assert attack_mod(message, None, call_next) is sentinel
    assert len(calls) == 1 and calls[0][0] is message and calls[0][1] == config


def test_honest_train_reply_is_byte_for_byte_the_plain_reply():
    _, plain = _send({"seed": 3})
    _, modded = _send({"seed": 3}, mods=[attack_mod])
    for key, array in next(iter(plain.content.array_records.values())).items():
        other = next(iter(modded.content.array_records.values()))[key]
        assert (other.dtype, other.shape, other.data) == (array.dtype, array.shape, array.data)
    assert "poison-label-flip" not in Affine.configs[0]


def test_evaluate_and_query_with_attack_keys_are_untouched_through_the_app():
    config = {"seed": 3, "attack": "backdoor", "attack-target": 1}
    _, plain = _send(config, MessageType.EVALUATE)
    _, modded = _send(config, MessageType.EVALUATE, mods=[attack_mod])
    assert dict(modded.content.metric_records["metrics"]) == {
        "accuracy": 0.25, "loss": 15.0, "num-examples": 10
    } == dict(plain.content.metric_records["metrics"])
    assert Affine.configs == [config]  # no poisoning directive reached evaluate
    query = {"fedstale-action": "describe", "attack": "sign_flip"}
    _, plain = _send(query, MessageType.QUERY)
    _, modded = _send(query, MessageType.QUERY, mods=[attack_mod])
    assert dict(modded.content.config_records["config"]) == dict(plain.content.config_records["config"])


def test_error_replies_pass_through():
    message = _message({"seed": 3, "attack": "sign_flip", "attack-boost": 2.0})
    error = Message(Error(code=2, reason="inner failure"), reply_to=message)
    assert attack_mod(message, None, lambda m, c: error) is error
    sent, reply = _send({"seed": 3, "attack": "backdoor", "attack-target": 1},
                        client=Failing, train_mods=[attack_mod])
    assert reply.has_error() and "RuntimeError: client broke" in reply.error.reason
    assert "poison-backdoor-target" not in sent.content.config_records["config"]


def test_unknown_attack_is_an_error_reply_naming_the_attacks():
    _, reply = _send({"seed": 1, "attack": "meteor"}, train_mods=[attack_mod])
    assert reply.has_error()
    assert ("ValueError: unknown attack 'meteor'; accepted: sign_flip, scaling, model_scaling, "
            "gaussian, label_flip, backdoor") in reply.error.reason
    assert Affine.configs == []  # the client never trained


def test_data_poisoning_directives_reach_the_client_and_not_the_server_message():
    sent, _ = _send({"seed": 1, "attack": "label_flip", "attack-poison-fraction": 0.25},
                    train_mods=[attack_mod])
    assert Affine.configs[0]["poison-label-flip"] == 0.25
    assert "poison-backdoor-target" not in Affine.configs[0]
    assert dict(sent.content.config_records["config"]) == {
        "seed": 1, "attack": "label_flip", "attack-poison-fraction": 0.25
    }
    _send({"seed": 1, "attack": "backdoor", "attack-target": 3, "attack-trigger-size": 2,
           "attack-poison-fraction": 0.5}, train_mods=[attack_mod])
    assert {k: v for k, v in Affine.configs[0].items() if k.startswith("poison-")} == {
        "poison-backdoor-target": 3, "poison-backdoor-trigger-size": 2,
        "poison-backdoor-fraction": 0.5,
    }
    _send({"seed": 1, "attack": "scaling"}, train_mods=[attack_mod])
    assert not any(k.startswith("poison-") for k in Affine.configs[0])


CLIENT_CONFIG = {"num-clients": 20, "dataset": "digits", "model": "cnn", "lr": 0.05,
                 "local-epochs": 1, "batch-size": 16}


def test_torch_client_poisons_a_copy_of_its_data():
    spec = PartitionSpec("iid", 20)
    x, y = load_client_data("digits", 0.2, spec, 0)
    x_before, y_before = x.copy(), y.copy()
    client = TorchClient(0, 20)
    n = len(y)
    chosen = np.random.default_rng(4).choice(n, size=int(round(0.5 * n)), replace=False)

    fx, fy = client._training_data({**CLIENT_CONFIG, "seed": 4, "poison-label-flip": 0.5})
    expected_y = y_before.copy()
    expected_y[chosen] = 9 - y_before[chosen]
    np.testing.assert_array_equal(fy, expected_y)
    np.testing.assert_array_equal(fx, x_before)
    assert int((fy != y_before).sum()) == int(round(0.5 * n))  # 9 − y ≠ y for every digit

    config = {**CLIENT_CONFIG, "seed": 4, "poison-backdoor-target": 2,
              "poison-backdoor-trigger-size": 3, "poison-backdoor-fraction": 0.5}
    bx, by = client._training_data(config)
    expected_x, expected_y = x_before.copy(), y_before.copy()
    expected_x[chosen, :, -3:, -3:] = 1.0
    expected_y[chosen] = 2
    np.testing.assert_array_equal(bx, expected_x)
    np.testing.assert_array_equal(by, expected_y)
    again = client._training_data(config)
    np.testing.assert_array_equal(again[0], bx)
    np.testing.assert_array_equal(again[1], by)
    other_seed = client._training_data({**config, "seed": 5})
    assert not np.array_equal(other_seed[1], by)

    np.testing.assert_array_equal(x, x_before)  # the cached data are untouched
    np.testing.assert_array_equal(y, y_before)
    cached = load_client_data("digits", 0.2, spec, 0)
    np.testing.assert_array_equal(cached[0], x_before)
    np.testing.assert_array_equal(cached[1], y_before)
    clean = client._training_data({**CLIENT_CONFIG, "seed": 4})
    np.testing.assert_array_equal(clean[0], x_before)
    np.testing.assert_array_equal(clean[1], y_before)


def test_poison_examples_counts_and_checks():
    x = np.zeros((5, 1, 4, 4), np.float32)
    y = np.array([0, 1, 2, 3, 4])
    # Python's round: round(0.5·5) = 2
    _, fy = poison_examples(x, y, 0.5, seed=0, flip_labels=True)
    assert int((fy != y).sum()) == 2
    bx, by = poison_examples(x, y, 0.6, seed=0, target=9, trigger_size=1)
    assert int((by == 9).sum()) == 3 and float(bx.sum()) == 3.0
    assert float(x.sum()) == 0.0 and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="exactly one"):
        poison_examples(x, y, 0.5, seed=0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        poison_examples(x, y, 1.5, seed=0, flip_labels=True)


@pytest.mark.parametrize(
    ("attack", "poison"),
    [
        ({"attack": "backdoor", "attack-boost": 3.0, "attack-target": 1, "attack-trigger-size": 2,
          "attack-poison-fraction": 0.5},
         {"target": 1, "trigger_size": 2}),
        ({"attack": "label_flip", "attack-poison-fraction": 1.0}, {"flip_labels": True}),
    ],
)
def test_torch_client_end_to_end(attack, poison):
    """fedstale's real client behind attack_mod: sent + boost·(train on poisoned data − sent)."""
    config = {**CLIENT_CONFIG, "client-id": 2, "seed": 9, **attack}
    spec = load_split("digits", 0.2, 0).spec
    sent = {k: v.numpy().copy() for k, v in build_model("cnn", spec, seed=1).state_dict().items()}
    grid = LocalGrid(build_client_app(client_fn, train_mods=[attack_mod]), num_nodes=1)
    message = Message(
        RecordDict({"arrays": ArrayRecord({k: Array(v.copy()) for k, v in sent.items()}),
                    "config": ConfigRecord(config)}),
        dst_node_id=next(iter(grid.get_node_ids())), message_type=MessageType.TRAIN,
    )
    reply = next(iter(grid.pull_messages(list(grid.push_messages([message])))))
    got = _arrays(reply)

    x, y = load_client_data("digits", 0.2, PartitionSpec("iid", 20), 2)
    fraction = float(attack["attack-poison-fraction"])
    px, py = poison_examples(x, y, fraction, 9, **poison)
    model = build_model("cnn", spec, seed=1)
    train(model, px, py, train_settings_from(config), pick_device())
    boost = float(attack.get("attack-boost", 1.0)) if attack["attack"] == "backdoor" else 1.0
    assert reply.content.metric_records["metrics"]["num-examples"] == len(y)
    for key, value in model.state_dict().items():
        trained = value.numpy().astype(np.float64)
        expected = (sent[key] + boost * (trained - sent[key])).astype(np.float32)
        np.testing.assert_array_equal(got[key], expected)


def test_backdoor_test_set_and_trigger():
    x = np.zeros((6, 1, 8, 8), np.float32)
    y = np.array([0, 1, 2, 0, 3, 0])
    bx, by = backdoor_test_set(x, y, target=0, size=3)
    assert bx.shape == (3, 1, 8, 8) and by.tolist() == [0, 0, 0] and by.dtype == y.dtype
    expected = np.zeros((3, 1, 8, 8), np.float32)
    expected[:, :, 5:, 5:] = 1.0
    np.testing.assert_array_equal(bx, expected)
    stamped = apply_trigger(x, 2)
    assert float(stamped.sum()) == 6 * 4 and float(stamped[0, 0, 6:, 6:].sum()) == 4.0
    assert float(x.sum()) == 0.0  # a copy
    with pytest.raises(ValueError, match=r"trigger size must be in 1\.\.8, got 0"):
        apply_trigger(x, 0)


def test_attack_success_rate_is_accuracy_on_the_backdoor_set():
    x = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    bx, by = backdoor_test_set(x, y, target=4, size=2)
    always = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        always[1].weight.zero_()
        always[1].bias.copy_(torch.eye(10)[4])  # always predicts 4
    device = torch.device("cpu")
    assert attack_success_rate(always, bx, by, device) == 1.0
    with torch.no_grad():
        always[1].bias.copy_(torch.eye(10)[7])
    assert attack_success_rate(always, bx, by, device) == 0.0


def test_alie_and_ipm_match_byzfl():
    honest = torch.from_numpy(np.random.default_rng(0).normal(size=(6, 9)).astype(np.float32))
    assert torch.equal(ALittleIsEnough(z=1.5).craft(honest), ByzALIE(tau=1.5)(honest))
    assert torch.equal(InnerProductManipulation(epsilon=10.0).craft(honest), ByzIPM(tau=10.0)(honest))
    np.testing.assert_allclose(
        alie(honest, 1.5).numpy(), ByzALIE(tau=1.5)(honest.numpy()), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        ipm(honest, 10.0).numpy(), ByzIPM(tau=10.0)(honest.numpy()), rtol=1e-6, atol=1e-6
    )


def test_alie_and_ipm_by_hand():
    small = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    # μ = [3, 6]; sample σ (ddof 1) = [√(8/2), √(32/2)] = [2, 4] (population σ would be √(8/3), √(32/3))
    assert ALittleIsEnough(z=1.0).craft(small).tolist() == [5.0, 10.0]
    assert ALittleIsEnough(z=1.5).craft(small).tolist() == [6.0, 12.0]
    assert InnerProductManipulation(epsilon=2.0).craft(small).tolist() == [-6.0, -12.0]
    assert ALittleIsEnough().craft(torch.zeros(0, 2)) is None
    assert InnerProductManipulation().craft(torch.zeros(0, 2)) is None
    assert ALittleIsEnough(z=3.0).craft(small[:1]).tolist() == [1.0, 2.0]  # one delta: σ = 0
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        ALittleIsEnough().craft(torch.zeros(3))
