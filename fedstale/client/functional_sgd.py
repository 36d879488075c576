"""``torch.optim.SGD``'s update without ``torch.optim.Optimizer``: the local SGD of a client.

Why not ``torch.optim.SGD`` itself: ``Optimizer.add_param_group``,
``zero_grad`` and ``step`` are wrapped by ``torch._disable_dynamo`` /
``_use_grad_for_differentiable``, which import ``torch._dynamo`` (and
sympy) on their first call. That costs every process that trains
1.4-1.9 CPU-seconds at its first step, against 0.01-0.03 s here (a fresh
process's first local update of the digits MLP, 2 cores, torch 2.14; the
whole process, torch's import included, 3.4-4.1 s against 2.2-3.4 s):
once per Ray ClientApp actor of a ``flwr run``, and once per task under
Flower's own ``flower-superexec``, whose ``flwr-clientapp`` process lives
for one task. A local update needs none of what those
wrappers serve (``torch.compile``, hooks, ``state_dict``): it builds a
fresh optimizer and throws it away.

The arithmetic is torch's own: :meth:`FunctionalSGD.step` calls
``torch.optim.sgd.sgd``, the function ``torch.optim.SGD.step`` calls, with
the arguments ``SGD.step`` passes for one parameter group (no dampening,
no Nesterov, torch's choice of the single-tensor, foreach or fused
kernel). The parameters it gives are bit for bit those of
``torch.optim.SGD`` (``tests/test_functional_sgd.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.sgd import sgd


class FunctionalSGD:
    """SGD with momentum and weight decay, as ``torch.optim.SGD(params, lr, momentum, weight_decay=...)``.

    It offers what a training loop calls (``zero_grad``, ``step``) and a
    disabled ``torch.amp.GradScaler`` passes through; a loop that needs a
    real ``torch.optim.Optimizer`` (Opacus' ``make_private``, an enabled
    GradScaler for float16) uses ``torch.optim.SGD``
    (:func:`fedstale.client.training.make_optimizer`).

    Parameters
    ----------
    params : Iterable[torch.Tensor]
        The parameters to update (one group).
    lr : float
        Learning rate.
    momentum : float (default: 0.0)
        Momentum factor; the buffer starts as the first gradient, as in torch.
    weight_decay : float (default: 0.0)
        L2 penalty added to the gradient.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0.0 or momentum < 0.0 or weight_decay < 0.0:
            raise ValueError(
                f"SGD needs lr, momentum and weight_decay >= 0, got {lr}, {momentum}, {weight_decay}"
            )
        self.params = list(params)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.momentum_buffers: dict[int, torch.Tensor | None] = {}
        """Momentum buffer of each parameter (by position) that has had a gradient."""

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none=True``, torch's default)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One SGD step on the parameters that have a gradient."""
        with_grad = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in with_grad]
        grads = [p.grad for p in params]
        # SGD.step gives the buffers only with momentum (an empty list without)
        buffers = [self.momentum_buffers.get(i) for i in with_grad] if self.momentum != 0 else []
        sgd(
            params,
            grads,
            buffers,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            has_sparse_grad=any(g.is_sparse for g in grads),
            foreach=None,
            fused=None,
        )
        if self.momentum != 0:
            self.momentum_buffers.update(zip(with_grad, buffers))
