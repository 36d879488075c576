"""Server optimizers on the aggregated pseudo-gradient (``strategy.server_optimizer``).

One class per file, registered under its YAML name:

- ``sgd`` (:class:`SGD`): m ← β·m + d, x ← x + η·m (today's FedBuff step)
- ``adam`` (:class:`Adam`): FedAdam, Flower's bias correction
- ``yogi`` (:class:`Yogi`): FedYogi
- ``adagrad`` (:class:`Adagrad`): FedAdagrad

The adaptive three are Reddi et al., "Adaptive Federated Optimization"
(ICLR 2021), as Flower's ``FedAdam``/``FedYogi``/``FedAdagrad`` compute them.
"""

from __future__ import annotations

from .adagrad import Adagrad
from .adam import Adam
from .base import AdaptiveOptimizer, ServerOptimizer
from .sgd import SGD
from .yogi import Yogi

SERVER_OPTIMIZERS: dict[str, type[ServerOptimizer]] = {
    cls.name: cls for cls in (SGD, Adam, Yogi, Adagrad)
}
"""Registry keyed by the names used in YAML (``strategy.server_optimizer``)."""


def make_server_optimizer(
    name: str,
    *,
    lr: float = 1.0,
    momentum: float = 0.0,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 1e-3,
) -> ServerOptimizer:
    """The optimizer ``name`` with the parameters it uses.

    ``momentum`` is SGD's β; ``beta_1``, ``beta_2`` and ``tau`` are the
    adaptive optimizers'. ``lr`` is η for all.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`SERVER_OPTIMIZERS`, or a parameter is
        out of range.
    """
    if name not in SERVER_OPTIMIZERS:
        raise ValueError(
            f"unknown server optimizer '{name}'; accepted: {', '.join(SERVER_OPTIMIZERS)}"
        )
    if name == "sgd":
        return SGD(lr=lr, momentum=momentum)
    return SERVER_OPTIMIZERS[name](lr=lr, beta_1=beta_1, beta_2=beta_2, tau=tau)  # type: ignore[call-arg]


__all__ = [
    "SERVER_OPTIMIZERS",
    "SGD",
    "Adagrad",
    "Adam",
    "AdaptiveOptimizer",
    "ServerOptimizer",
    "Yogi",
    "make_server_optimizer",
]
