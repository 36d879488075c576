"""Client-side DP-SGD with Opacus, with an accountant that persists per client.

Each local update runs Opacus DP-SGD (Poisson sampling, per-example clipping
to ``C``, Gaussian noise ``z·C``). The privacy accountant's history — the
``(z, q, steps)`` of every update this client ever ran — lives in the
client's Flower ``Context.state`` under :data:`STATE_KEY`, is restored into
a fresh ``PrivacyEngine`` before training and written back after it. ε
therefore grows with every participation instead of restarting from zero
as it does when a new engine is built per round (Flower's Opacus example).

Two modes:

- noise-multiplier mode: ``z`` as configured;
- target-ε mode: ``z`` is computed once per client with Opacus'
  ``get_noise_multiplier`` so that ``max_participations`` updates of this
  client spend ``target_epsilon``; it is stored with the history and never
  changes.

Determinism: Poisson batch sampling and the DP noise each come from a
``torch.Generator`` seeded from the task ``seed``, so the same seed, data
and model give the same update (on CPU; CUDA kernels may differ in the last
bits). That is for reproducible experiments only: seeded, non-cryptographic
noise is not what a deployment should use (Opacus' ``secure_mode``).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, RecordDict
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .training import Array, TrainResult, TrainSettings, as_tensor, make_optimizer, to_device

STATE_KEY = "dp-accountant"
"""Key of the accountant's ConfigRecord in the client's ``Context.state``."""

ACCOUNTANTS = ("rdp", "prv", "gdp")


class PrivacyBudgetSpent(RuntimeError):
    """The client already ran ``max_participations`` DP-SGD updates."""


@dataclass(frozen=True)
class DpSettings:
    """DP-SGD directives of a TRAIN message (``dp-*`` keys, set by the server).

    Attributes
    ----------
    noise_multiplier : float | None
        z; None in target-ε mode.
    target_epsilon : float | None
        ε this client may spend over ``max_participations`` updates.
    max_participations : int
        Updates the budget covers; the client refuses more (0: unlimited).
    max_grad_norm : float
        C, the per-example clipping bound.
    delta : float
        δ of the reported (ε, δ).
    accountant : str
        Opacus accountant: ``rdp``, ``prv`` or ``gdp``.
    """

    noise_multiplier: float | None
    target_epsilon: float | None
    max_participations: int
    max_grad_norm: float
    delta: float
    accountant: str = "rdp"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DpSettings | None:
        """The settings in a message config; None without ``dp-sgd``."""
        if not bool(config.get("dp-sgd", False)):
            return None
        z = config.get("dp-noise-multiplier")
        target = config.get("dp-target-epsilon")
        settings = cls(
            noise_multiplier=None if z is None else float(z),
            target_epsilon=None if target is None else float(target),
            max_participations=int(config.get("dp-max-participations", 0)),
            max_grad_norm=float(config.get("dp-max-grad-norm", 1.0)),
            delta=float(config.get("dp-delta", 1e-5)),
            accountant=str(config.get("dp-accountant", "rdp")),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ValueError naming the message key that is wrong."""
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(
                f"dp-accountant '{self.accountant}': accepted {', '.join(ACCOUNTANTS)}"
            )
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("dp-sgd needs dp-noise-multiplier or dp-target-epsilon")
        if self.target_epsilon is not None and self.max_participations <= 0:
            raise ValueError(
                "dp-target-epsilon needs dp-max-participations > 0 (the updates the budget covers)"
            )
        for key, value in (
            ("dp-noise-multiplier", self.noise_multiplier),
            ("dp-target-epsilon", self.target_epsilon),
            ("dp-max-grad-norm", self.max_grad_norm),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be > 0, got {value}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp-delta must be in (0, 1), got {self.delta}")


@dataclass
class AccountantState:
    """What a client keeps between its participations.

    Attributes
    ----------
    noise_multiplier : float | None
        z of this client's last update; in target-ε mode the z derived at its
        first update, reused for all the others.
    history : list[tuple[float, float, int]]
        Opacus accountant history: ``(z, q, steps)`` entries.
    participations : int
        DP-SGD updates run so far.
    """

    noise_multiplier: float | None = None
    history: list[tuple[float, float, int]] = field(default_factory=list)
    participations: int = 0

    @property
    def steps(self) -> int:
        """Noisy steps accounted so far."""
        return sum(int(s) for _, _, s in self.history)

    def to_record(self) -> ConfigRecord:
        """A ConfigRecord for ``Context.state``."""
        return ConfigRecord(
            {
                "noise-multiplier": -1.0 if self.noise_multiplier is None else self.noise_multiplier,
                "history-z": [float(z) for z, _, _ in self.history],
                "history-q": [float(q) for _, q, _ in self.history],
                "history-steps": [int(s) for _, _, s in self.history],
                "participations": self.participations,
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> AccountantState:
        """Inverse of :meth:`to_record`."""
        z = float(record["noise-multiplier"])  # type: ignore[arg-type]
        history = list(
            zip(
                [float(v) for v in record["history-z"]],  # type: ignore[union-attr]
                [float(v) for v in record["history-q"]],  # type: ignore[union-attr]
                [int(v) for v in record["history-steps"]],  # type: ignore[union-attr]
            )
        )
        return cls(
            noise_multiplier=None if z < 0 else z,
            history=history,
            participations=int(record["participations"]),  # type: ignore[arg-type]
        )

    @classmethod
    def load(cls, state: RecordDict | None) -> AccountantState:
        """The state kept in ``state`` (a fresh one if there is none)."""
        if state is None or STATE_KEY not in state:
            return cls()
        return cls.from_record(state.config_records[STATE_KEY])

    def save(self, state: RecordDict | None) -> None:
        """Write this state into ``state`` under :data:`STATE_KEY`."""
        if state is not None:
            state[STATE_KEY] = self.to_record()


@dataclass(frozen=True)
class DpResult:
    """What a DP-SGD update reports besides the model."""

    train: TrainResult
    epsilon: float
    noise_multiplier: float
    steps: int
    """Noisy steps of this client over all its participations."""
    sample_rate: float


def sampling(num_examples: int, batch_size: int) -> tuple[float, int]:
    """Poisson sampling rate q and steps per epoch, as Opacus sets them.

    Opacus' ``DPDataLoader`` takes ``q = 1 / len(data_loader)`` and draws
    ``len(data_loader) = ceil(n / B)`` batches per epoch.
    """
    steps = max(1, math.ceil(num_examples / batch_size))
    return 1.0 / steps, steps


def epsilon_of(history: list[tuple[float, float, int]], accountant: str, delta: float) -> float:
    """ε of ``history``, exactly as a fresh Opacus accountant computes it (0 without history).

    For ``rdp`` the per-step RDP curve of each ``(z, q)`` is cached
    (:func:`_rdp_per_step`): Opacus recomputes it on every call, which costs
    0.3–0.5 s on a small CPU, far more than a digits update. The result is
    bit-for-bit Opacus' ``RDPAccountant.get_epsilon``: the same
    ``compute_rdp`` and ``get_privacy_spent`` on the same numbers (RDP of
    ``steps`` steps is the per-step RDP times ``steps``).
    """
    if not history:
        return 0.0
    if accountant != "rdp":
        acc = create_accountant(accountant)
        acc.history = list(history)
        return float(acc.get_epsilon(delta=delta))
    rdp = sum(
        [np.asarray(_rdp_per_step(float(q), float(z))) * int(steps) for z, q, steps in history]
    )
    epsilon, _ = rdp_analysis.get_privacy_spent(
        orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
    )
    return float(epsilon)


@lru_cache(maxsize=1024)
def _rdp_per_step(sample_rate: float, noise_multiplier: float) -> tuple[float, ...]:
    """Opacus' RDP of one Poisson-subsampled Gaussian step at its default orders."""
    return tuple(
        rdp_analysis.compute_rdp(
            q=sample_rate,
            noise_multiplier=noise_multiplier,
            steps=1,
            orders=RDPAccountant.DEFAULT_ALPHAS,
        )
    )


def resolve_noise_multiplier(
    settings: DpSettings, state: AccountantState, sample_rate: float, steps_per_update: int
) -> float:
    """The client's z: the configured one, or (target-ε mode) the one derived at its first update."""
    if settings.target_epsilon is None:
        assert settings.noise_multiplier is not None
        return settings.noise_multiplier
    if state.noise_multiplier is not None:
        return state.noise_multiplier
    return _noise_for_target(
        settings.target_epsilon,
        settings.delta,
        sample_rate,
        settings.max_participations * steps_per_update,
        settings.accountant,
    )


@lru_cache(maxsize=256)
def _noise_for_target(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """Opacus' ``get_noise_multiplier`` (a binary search of seconds), once per process
    for each distinct budget: clients with as many examples share it."""
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    )


def check_full_precision(settings: TrainSettings) -> None:
    """Refuse mixed precision with DP-SGD (``mixed-precision`` must be ``none``).

    The guarantee rests on every per-example gradient being clipped to norm
    C before noise of scale z·C is added. With ``fp16`` the GradScaler
    multiplies every per-example gradient by its loss scale before Opacus
    clips them, and skips a step when the gradients overflow: clipping no
    longer acts on the true gradients, and the skip is a data-dependent
    decision the accountant does not see. With ``bf16`` Opacus computes the
    per-example gradients, and their norms, in bfloat16 (8-bit mantissa), so
    the clipping factor carries that rounding (~0.4 %) and a clipped
    gradient may exceed C. DP-SGD therefore stays float32.

    Raises
    ------
    ValueError
        Naming ``mixed-precision`` and the config field that fixes it.
    """
    if settings.mixed_precision != "none":
        raise ValueError(
            f"mixed-precision '{settings.mixed_precision}' cannot be used with dp-sgd: "
            "per-example clipping to C needs float32 gradients; set "
            "client.mixed_precision: none with privacy.local.enabled"
        )


def _run_epochs(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    epochs: int,
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None,
    generator: torch.Generator,
) -> float:
    """DP-SGD epochs over Opacus' Poisson loader; the last epoch's mean loss.

    On an empty Poisson batch the mean loss is NaN but the per-example
    gradients are empty, so the optimizer's step is pure noise and the
    accountant records it, as DP-SGD requires.
    """
    loss_fn = nn.CrossEntropyLoss()
    epoch_loss = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for inputs, targets in loader:
            inputs, targets = to_device(inputs, device), to_device(targets, device)
            if augment is not None and len(inputs):
                inputs = augment(inputs, generator)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            if len(targets):
                total += loss.item() * len(targets)
                count += len(targets)
        epoch_loss = total / max(count, 1)
    return epoch_loss


def train_dp(  # pylint: disable=too-many-arguments,too-many-locals
    model: nn.Module,
    x: Array,
    y: Array,
    settings: TrainSettings,
    dp: DpSettings,
    state: AccountantState,
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> DpResult:
    """DP-SGD over (x, y) for ``settings.epochs`` epochs; updates ``model`` and ``state``.

    ``model`` is trained in place through an Opacus ``GradSampleModule``
    wrapped around a deep copy, whose weights are copied back, so no Opacus
    hook is ever left on ``model``. Every Poisson-sampled step counts,
    empty batches included (Opacus feeds a zero-size batch; the step adds
    pure noise and the accountant records it). ``patience`` is ignored: a
    data-dependent stop would leak through the step count, and target-ε mode
    plans for all epochs.

    Raises
    ------
    PrivacyBudgetSpent
        When ``state`` already holds ``dp.max_participations`` updates.
    ValueError
        When ``settings.mixed_precision`` is not ``none`` (see
        :func:`check_full_precision`).
    """
    check_full_precision(settings)
    if dp.max_participations > 0 and state.participations >= dp.max_participations:
        raise PrivacyBudgetSpent(
            f"privacy budget spent: this client ran {state.participations} DP-SGD updates, "
            f"dp-max-participations is {dp.max_participations}"
        )
    sample_rate, steps_per_epoch = sampling(len(x), settings.batch_size)
    z = resolve_noise_multiplier(dp, state, sample_rate, steps_per_epoch * settings.epochs)
    work = copy.deepcopy(model).to(device).train()
    optimizer = make_optimizer(work, settings, torch_optimizer=True)
    data_generator = torch.Generator().manual_seed(settings.seed)
    noise_generator = torch.Generator(device=device).manual_seed(settings.seed + 1)
    loader = DataLoader(
        TensorDataset(as_tensor(x), as_tensor(y)),
        batch_size=settings.batch_size,
        generator=data_generator,
    )
    with warnings.catch_warnings():
        # Opacus warns that the RNG is not cryptographic (secure_mode off), as intended here
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=dp.accountant)
        engine.accountant.history = list(state.history)
        private, optimizer, loader = engine.make_private(
            module=work,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=z,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True,
            noise_generator=noise_generator,
        )
    with warnings.catch_warnings():
        # the first layer's inputs need no gradient; Opacus' hooks only need its outputs'
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        epoch_loss = _run_epochs(
            private, optimizer, loader, settings.epochs, device, augment, data_generator
        )
    model.load_state_dict(private._module.state_dict())  # pylint: disable=protected-access
    private.remove_hooks()
    state.noise_multiplier = z
    state.history = [(float(a), float(b), int(c)) for a, b, c in engine.accountant.history]
    state.participations += 1
    return DpResult(
        train=TrainResult(epochs_run=settings.epochs, train_loss=epoch_loss),
        epsilon=epsilon_of(state.history, dp.accountant, dp.delta),
        noise_multiplier=z,
        steps=state.steps,
        sample_rate=sample_rate,
    )
