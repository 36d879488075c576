"""The clients' SGD (``fedstale/client/functional_sgd.py``): torch.optim.SGD's
numbers without importing ``torch._dynamo``."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from fedstale.client.functional_sgd import FunctionalSGD
from fedstale.client.training import TrainSettings, make_optimizer, train
from fedstale.superexec.options import WORKER_SCRIPT


class _Net(nn.Module):
    """An MLP with a head used only from step 5 on and one layer never used."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.late = nn.Linear(64, 10)
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        out = self.body(x)
        return out + self.late(x) if step >= 5 else out


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_same_parameters_bit_for_bit_as_torch_sgd(momentum, weight_decay):
    """30 steps: every parameter equal to torch.optim.SGD's, including one whose
    gradients (and momentum buffer) start at step 5 and one that never has any."""
    torch.manual_seed(0)
    ours_net = _Net()
    torch_net = copy.deepcopy(ours_net)
    ours = FunctionalSGD(ours_net.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    theirs = torch.optim.SGD(torch_net.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    initial = {name: p.detach().clone() for name, p in ours_net.named_parameters()}
    x, y = torch.randn(160, 64), torch.randint(0, 10, (160,))
    for step in range(30):
        batch = slice(16 * (step % 10), 16 * (step % 10 + 1))
        for net, opt in ((ours_net, ours), (torch_net, theirs)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[batch], step), y[batch]).backward()
            opt.step()
    pairs = list(zip(ours_net.named_parameters(), torch_net.parameters(), strict=True))
    assert all(torch.equal(mine, other) for (_, mine), other in pairs)
    moved = {name for name, p in ours_net.named_parameters() if not torch.equal(p, initial[name])}
    assert moved == {n for n, _ in ours_net.named_parameters() if not n.startswith("unused")}
    assert len(ours.momentum_buffers) == (6 if momentum else 0)  # body (4) and late (2) tensors


def test_zero_grad_drops_gradients_and_bad_hyperparameters_are_refused():
    layer = nn.Linear(2, 1)
    opt = FunctionalSGD(layer.parameters(), lr=0.1)
    layer(torch.ones(1, 2)).sum().backward()
    opt.zero_grad()
    assert [p.grad for p in layer.parameters()] == [None, None]
    with pytest.raises(ValueError, match=r"SGD needs lr, momentum and weight_decay >= 0, got -0.1, 0.0, 0.0"):
        FunctionalSGD(layer.parameters(), lr=-0.1)


def test_make_optimizer_gives_torch_sgd_where_a_torch_optimizer_is_needed():
    model = nn.Linear(2, 1)
    settings = TrainSettings(lr=0.1, momentum=0.5, weight_decay=0.01)
    assert isinstance(make_optimizer(model, settings), FunctionalSGD)
    torch_sgd = make_optimizer(model, settings, torch_optimizer=True)
    assert isinstance(torch_sgd, torch.optim.SGD)
    assert {k: torch_sgd.defaults[k] for k in ("lr", "momentum", "weight_decay")} == {
        "lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}
    assert isinstance(make_optimizer(model, TrainSettings(optimizer="adamw")), torch.optim.AdamW)


def test_train_matches_a_loop_on_torch_sgd():
    """fedstale's local update equals the same loop on torch.optim.SGD."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=100)
    settings = TrainSettings(epochs=3, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4, seed=7)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    reference = copy.deepcopy(model)
    train(model, x, y, settings, torch.device("cpu"))
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(7)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        order = torch.randperm(100, generator=generator)
        for start in range(0, 100, 16):
            batch = order[start : start + 16]
            opt.zero_grad()
            nn.functional.cross_entropy(reference(inputs[batch]), targets[batch]).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters(), strict=True))


_LOCAL_UPDATE = """
import sys
import numpy as np
import torch
from fedstale.client.training import TrainSettings, train
x = np.zeros((32, 4), dtype=np.float32)
y = np.zeros(32, dtype=np.int64)
settings = TrainSettings(epochs=1, batch_size=8, optimizer="{optimizer}")
train(torch.nn.Linear(4, 2), x, y, settings, torch.device("cpu"))
print("torch._dynamo" in sys.modules)
"""


@pytest.mark.parametrize("optimizer, imported", [("sgd", "False"), ("adamw", "True")])
def test_an_sgd_update_does_not_import_torch_dynamo(optimizer, imported):
    """A fresh process: a local SGD update leaves ``torch._dynamo`` unimported;
    AdamW (torch.optim) imports it, which shows the check can fail."""
    out = subprocess.run([sys.executable, "-c", _LOCAL_UPDATE.format(optimizer=optimizer)],
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == [imported]


def test_the_warm_workers_warm_up_does_not_import_torch_dynamo():
    script = textwrap.dedent(f"""
        import runpy, sys
        import torch
        worker = runpy.run_path({str(WORKER_SCRIPT)!r}, run_name="warm_up_check")
        print(worker["_warm_up_torch"](), "torch._dynamo" in sys.modules, torch.is_grad_enabled())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["True", "False", "True"]  # it stepped, no dynamo, grad mode back
