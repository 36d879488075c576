"""GPU-ready local training: device chosen once, pinned partitions, mixed precision.

No CUDA here, so the CUDA decisions (pin or not, autocast dtype, GradScaler
or not) are asserted on the pure functions that make them, and the CPU
autocast paths (bfloat16, and float16 with a GradScaler) really run.

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_bf16_autocast_runs_on_cpu_learns_and_keeps_float32_weights | bf16 - float32 accuracy, absolute | 0,1,2,3,4 | 0.042 | <= 0.06 | 0.018 |
| test_bf16_autocast_runs_on_cpu_learns_and_keeps_float32_weights | bf16 accuracy | 0,1,2,3,4 | 0.944 | >= 0.88 | 0.064 |
| test_fedbuff_run_with_bf16_clients_learns_digits | final accuracy | 0,1,2,3,4 | 0.928 | >= 0.85 | 0.078 |
| test_the_loop_with_a_live_grad_scaler_learns | fp16 + GradScaler accuracy | 0,1,2,3,4 | 0.939 | >= 0.88 | 0.059 |
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedstale.builders import initial_arrays, train_config
from fedstale.client import TorchClient
from fedstale.client import torch_client as torch_client_module
from fedstale.client import training as training_module
from fedstale.client.privacy import AccountantState, DpSettings, train_dp
from fedstale.client.training import (
    BF16_UNSUPPORTED,
    FP16_ON_CPU,
    Precision,
    TrainSettings,
    evaluate,
    pick_device,
    pin_host_memory,
    precision_for,
    to_device,
    train,
)
from fedstale.config import ClientConfig, ConfigError
from fedstale.data import load_split
from fedstale.models import build_model
from tests.helpers import SEED, config, run

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # a device object only; nothing runs on it here
SETTINGS = TrainSettings(epochs=3, batch_size=32, lr=0.05, momentum=0.9, seed=3 + SEED)
FLOOR = 0.88
"""Digits test accuracy after 3 epochs here: cnn 0.903 (float32), 0.917 (bf16)."""


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One thread, as a ClientApp uses (client.num_threads): on 2 shared cores two
    threads made the bf16 update 10-50x slower than one."""
    threads, pinned = torch.get_num_threads(), list(torch_client_module._THREADS_SET)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch_client_module._THREADS_SET[:] = pinned  # what set_torch_threads believes


@pytest.fixture(scope="module")
def digits():
    return load_split("digits", 0.2, SEED)


def _activation_dtypes(model: nn.Module) -> list[torch.dtype]:
    """Record the output dtype of every Conv2d/Linear forward of ``model``."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def _train_digits(digits, mode: str, name: str = "cnn") -> tuple[nn.Module, list[torch.dtype]]:
    model = build_model(name, digits.spec, seed=SEED)
    dtypes = _activation_dtypes(model)
    settings = TrainSettings(**{**SETTINGS.__dict__, "mixed_precision": mode})
    train(model, digits.x_train, digits.y_train, settings, CPU)
    return model, dtypes


# -- decisions (what a CUDA machine would do) --------------------------------


def test_precision_decisions_for_cuda_and_cpu():
    assert precision_for("none", CUDA) == Precision("cuda", None, grad_scaler=False)
    assert precision_for("none", CPU) == Precision("cpu", None, grad_scaler=False)
    assert precision_for("bf16", CUDA, bf16_supported=True) == Precision(
        "cuda", torch.bfloat16, grad_scaler=False
    )
    assert precision_for("bf16", CPU) == Precision("cpu", torch.bfloat16, grad_scaler=False)
    assert precision_for("fp16", CUDA) == Precision("cuda", torch.float16, grad_scaler=True)
    assert precision_for("fp16", CPU) == Precision("cpu", None, False, fallback=FP16_ON_CPU)
    assert precision_for("bf16", CUDA, bf16_supported=False) == Precision(
        "cuda", None, False, fallback=BF16_UNSUPPORTED
    )


def test_pinning_only_for_cuda():
    assert pin_host_memory(CUDA) is True
    assert pin_host_memory(CPU) is False


def test_scaler_enabled_only_for_fp16():
    assert Precision("cpu", torch.float16, grad_scaler=True).scaler().is_enabled()
    assert not precision_for("fp16", CPU).scaler().is_enabled()  # CPU: float32
    assert not precision_for("bf16", CPU).scaler().is_enabled()
    assert not precision_for("none", CPU).scaler().is_enabled()


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match=r"mixed-precision 'fp32': accepted none, bf16, fp16"):
        precision_for("fp32", CPU)


def test_device_is_chosen_once_per_process(monkeypatch):
    calls = []

    def fake_is_available() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(torch.cuda, "is_available", fake_is_available)
    pick_device.cache_clear()
    try:
        assert pick_device() == CUDA
        assert pick_device() == CUDA
        assert TorchClient(0, 4).device == CUDA
        assert len(calls) == 1
    finally:
        pick_device.cache_clear()
    monkeypatch.undo()
    assert pick_device() == CPU


# -- pinned, cached partitions -----------------------------------------------


def test_partition_pinned_once_for_cuda_and_not_for_cpu(monkeypatch):
    pinned = []

    def fake_pin(self):  # pin_memory needs a CUDA driver; record the call instead
        pinned.append(tuple(self.shape))
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    torch_client_module.partition_tensors.cache_clear()
    conf = dict(train_config(config("default")))
    try:
        client = TorchClient(1, 20)
        x_cpu, _ = client._data(conf)  # pylint: disable=protected-access
        assert pinned == []
        client.device = CUDA
        x1, y1 = client._data(conf)  # pylint: disable=protected-access
        x2, y2 = client._data(conf)  # pylint: disable=protected-access
        assert pinned == [tuple(x1.shape), tuple(y1.shape)]  # once per partition
        assert x1 is x2 and y1 is y2
        assert torch.equal(x1, x_cpu)
    finally:
        torch_client_module.partition_tensors.cache_clear()


def test_host_to_device_copies_are_non_blocking(monkeypatch, digits):
    flags = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        flags.append(kwargs.get("non_blocking", False))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    assert torch.equal(to_device(digits.x_train[:4], CPU), torch.from_numpy(digits.x_train[:4]))
    assert flags == [True]
    flags.clear()
    model = build_model("cnn", digits.spec, seed=0)
    train(model, digits.x_train[:64], digits.y_train[:64], TrainSettings(epochs=1), CPU)
    assert flags.count(True) == 2  # the partition's x and y, once per update


# -- autocast really runs on CPU ---------------------------------------------


def test_bf16_autocast_runs_on_cpu_learns_and_keeps_float32_weights(digits, learned):
    model, dtypes = _train_digits(digits, "bf16")
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.state_dict().values())
    _, accuracy = evaluate(model, digits.x_test, digits.y_test, CPU)
    learned.at_least("bf16 accuracy", accuracy, FLOOR)

    reference, ref_dtypes = _train_digits(digits, "none")
    assert set(ref_dtypes) == {torch.float32}
    _, ref_accuracy = evaluate(reference, digits.x_test, digits.y_test, CPU)
    learned.at_most("bf16 - float32 accuracy, absolute", abs(accuracy - ref_accuracy), 0.06)
    # bf16 arithmetic really changed the update: not the float32 model
    difference = max(
        float((a - b).abs().max())
        for a, b in zip(model.state_dict().values(), reference.state_dict().values())
    )
    assert difference > 1e-4


def test_fp16_on_cpu_trains_in_float32_and_warns_once(monkeypatch, digits):
    logged = []
    monkeypatch.setattr(
        training_module, "log_line", lambda text, warning: logged.append((text, warning))
    )
    training_module.warn_fallback.cache_clear()
    try:
        fp16, dtypes = _train_digits(digits, "fp16", name="mlp")
        _train_digits(digits, "fp16", name="mlp")
    finally:
        training_module.warn_fallback.cache_clear()
    assert set(dtypes) == {torch.float32}
    assert logged == [(FP16_ON_CPU, True)]
    fp32, _ = _train_digits(digits, "none", name="mlp")
    for a, b in zip(fp16.state_dict().values(), fp32.state_dict().values()):
        assert torch.equal(a, b)


def test_the_loop_with_a_live_grad_scaler_learns(monkeypatch, digits, learned):
    """The CUDA fp16 loop (float16 autocast + GradScaler), run on CPU by forcing its
    Precision: on the mlp, as CPU float16 convolutions are ~90x slower than float32."""
    scalers = []
    original = Precision.scaler

    def keep(self):
        scalers.append(original(self))
        return scalers[-1]

    monkeypatch.setattr(Precision, "scaler", keep)
    monkeypatch.setattr(
        training_module, "precision_for",
        lambda mode, device: Precision(device.type, torch.float16, grad_scaler=True),
    )
    model, dtypes = _train_digits(digits, "fp16", name="mlp")
    assert set(dtypes) == {torch.float16}
    (scaler,) = scalers
    assert scaler.is_enabled()
    assert 0 < scaler.get_scale() <= 65536.0
    assert all(p.dtype == torch.float32 for p in model.state_dict().values())
    _, accuracy = evaluate(model, digits.x_test, digits.y_test, CPU)
    learned.at_least("fp16 + GradScaler accuracy", accuracy, FLOOR)


def test_client_reply_stays_float32_under_bf16():
    cfg = config("default", client__mixed_precision="bf16")
    conf = dict(train_config(cfg)) | {"seed": 1}
    assert conf["mixed-precision"] == "bf16"
    start = [a.numpy() for a in initial_arrays(cfg).values()]
    params, num_examples, metrics = TorchClient(2, cfg.data.num_clients).fit(start, conf)
    assert [p.dtype for p in params] == [np.dtype(np.float32)] * len(start)
    assert [p.shape for p in params] == [s.shape for s in start]
    assert num_examples > 0 and np.isfinite(metrics["train-loss"])
    assert any(not np.array_equal(p, s) for p, s in zip(params, start))


def test_fedbuff_run_with_bf16_clients_learns_digits(learned):
    """The whole loop (ClientApp, bridge, TorchClient) with bf16 local training:
    0.931 after 80 versions here (float32: 0.944), floor as tests/test_event_loop.py."""
    result, _, recorder = run(
        config(
            "default", client__mixed_precision="bf16", stop__num_updates=80, evaluation__every=80
        )
    )
    assert len(recorder.updates) == 400
    learned.at_least("final accuracy", result.evaluate_metrics_serverapp[80]["accuracy"], 0.85)


# -- configuration -------------------------------------------------------------


def test_config_field_default_choices_and_dp_sgd_refusal():
    assert config("default").client.mixed_precision == "none"
    assert train_config(config("default"))["mixed-precision"] == "none"
    assert config("default", client__mixed_precision="fp16").client.mixed_precision == "fp16"
    with pytest.raises(ConfigError) as bad_choice:
        config("default", client__mixed_precision="fp32")
    assert "client.mixed_precision" in str(bad_choice.value)
    assert "fp32" in str(bad_choice.value)
    with pytest.raises(ConfigError) as with_dp:
        config("dp_sgd", client__mixed_precision="bf16")
    assert with_dp.value.problems == [
        "client.mixed_precision: 'bf16' cannot be used with privacy.local (DP-SGD clips "
        "per-example gradients to C in float32); set client.mixed_precision: none"
    ]


def test_dp_sgd_client_refuses_mixed_precision(digits):
    dp = DpSettings(
        noise_multiplier=1.0, target_epsilon=None, max_participations=0,
        max_grad_norm=1.0, delta=1e-5,
    )
    model = build_model("cnn", digits.spec, seed=0, private=True)
    settings = TrainSettings(epochs=1, mixed_precision="fp16")
    state = AccountantState()
    with pytest.raises(ValueError, match=r"mixed-precision 'fp16' cannot be used with dp-sgd"):
        train_dp(model, digits.x_train[:32], digits.y_train[:32], settings, dp, state, CPU)
    assert state.participations == 0 and state.history == []


def test_config_choices_are_what_the_client_accepts():
    (fld,) = [f for f in dataclasses.fields(ClientConfig) if f.name == "mixed_precision"]
    assert tuple(fld.metadata["choices"]) == training_module.MIXED_PRECISION
    for mode in training_module.MIXED_PRECISION:
        precision_for(mode, CPU)  # each one is runnable here
