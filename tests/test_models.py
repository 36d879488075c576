"""Every registered model runs on the dataset shapes fedstale uses and trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedstale.data.spec import DatasetSpec
from fedstale.config import TEXT_MODELS
from fedstale.models import MODELS, build_model
from fedstale.models.squeezenet import MIN_INPUT_SIDE

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
"""Digits, MNIST-like and CIFAR-like inputs."""

TOO_SMALL = {("squeezenet", (1, 8, 8))}
"""(model, shape) pairs the builder must refuse with a ValueError."""


IMAGE_MODELS = [name for name in MODELS if name not in TEXT_MODELS]
"""Models that take images (the text model has its own tests: test_lora.py)."""


def _spec(shape: tuple[int, ...]) -> DatasetSpec:
    return DatasetSpec(name="x", input_shape=shape, num_classes=10)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_gives_one_logit_per_class_and_no_buffers(name, shape):
    if (name, shape) in TOO_SMALL:
        with pytest.raises(ValueError, match=f"at least {MIN_INPUT_SIDE}×{MIN_INPUT_SIDE}"):
            MODELS[name](_spec(shape))
        return
    model = MODELS[name](_spec(shape))
    with torch.no_grad():
        logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert list(model.buffers()) == []
    state = model.state_dict()
    assert len(state) == len(list(model.parameters()))
    assert all(value.dtype == torch.float32 for value in state.values())


def test_squeezenet_minimum_input_side_is_exact():
    model = MODELS["squeezenet"](_spec((1, MIN_INPUT_SIDE, MIN_INPUT_SIDE)))
    assert model(torch.randn(2, 1, MIN_INPUT_SIDE, MIN_INPUT_SIDE)).shape == (2, 10)
    with pytest.raises(ValueError, match="got 9×12"):
        MODELS["squeezenet"](_spec((1, 9, 12)))


def test_resnet8_parameter_count_on_cifar():
    # Convs have no bias; GroupNorm(C) has C weights + C biases = 2C.
    # stem:    conv 3→16: 3·16·9 = 432,            GN16: 32            →    464
    # stage 1: conv 16→16: 16·16·9 = 2,304 (×2),   GN16: 32 (×2)       →  4,672
    # stage 2: conv 16→32: 4,608 + conv 32→32: 9,216, GN32: 64 (×2)    → 13,952
    # stage 3: conv 32→64: 18,432 + conv 64→64: 36,864, GN64: 128 (×2) → 55,552
    #          (option-A shortcuts: subsample + zero-pad, no parameters)
    # fc:      64·10 + 10 = 650
    # total:   464 + 4,672 + 13,952 + 55,552 + 650 = 75,290
    expected = 464 + 4_672 + 13_952 + 55_552 + 650
    assert expected == 75_290
    assert _count(MODELS["resnet8"](_spec((3, 32, 32)))) == expected


def test_resnet_stages_and_group_norms():
    resnet20 = MODELS["resnet20"](_spec((3, 32, 32)))
    convs = [m for m in resnet20.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in resnet20.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 20
    norms = [m for m in resnet20.modules() if isinstance(m, nn.GroupNorm)]
    assert {(m.num_channels, m.num_groups) for m in norms} == {(16, 2), (32, 4), (64, 8)}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet20.modules())
    resnet18 = MODELS["resnet18"](_spec((1, 28, 28)))
    assert resnet18.conv1.kernel_size == (3, 3) and resnet18.conv1.stride == (1, 1)
    assert resnet18.conv1.in_channels == 1
    assert isinstance(resnet18.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet18.modules())


def _one_sgd_step(name: str, shape: tuple[int, ...], seed: int):
    """(parameters before, parameters after, model) of one SGD step from ``seed``."""
    torch.manual_seed(seed)
    model = MODELS[name](_spec(shape)).train()
    inputs, targets = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(inputs), targets).backward()
    optimizer.step()
    return before, {k: v.clone() for k, v in model.state_dict().items()}, model


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_one_sgd_step_changes_parameters_and_is_deterministic(name):
    shape = (1, 8, 8) if name == "resnet18" else (3, 32, 32)  # keep resnet18 cheap
    before, after, model = _one_sgd_step(name, shape, seed=3)
    assert all(p.grad is not None for p in model.parameters())  # every parameter is used
    assert any(not torch.equal(before[k], after[k]) for k in before)
    _, again, _ = _one_sgd_step(name, shape, seed=3)
    assert all(torch.equal(after[k], again[k]) for k in after)
    other_before, _, _ = _one_sgd_step(name, shape, seed=4)
    assert any(not torch.equal(before[k], other_before[k]) for k in before)


def test_build_model_is_seeded():
    spec = _spec((3, 32, 32))
    first = build_model("resnet8", spec, seed=1).state_dict()
    second = build_model("resnet8", spec, seed=1).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
