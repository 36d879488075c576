"""A training task: one client working on one model version."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Message


@dataclass
class Task:  # pylint: disable=too-many-instance-attributes
    """One dispatch of the global model to one client, until its reply is merged.

    The strategy fills the dispatch fields; the clock fills ``earliest_finish``
    and ``finish_time``; the transport fills the message fields.
    """

    task_id: int
    client_id: int
    node_id: int
    index: int
    """How many tasks this client had before this one (0 for its first)."""
    dispatch_version: int
    dispatch_time: float
    num_examples: int | None
    """Size of the client's training set, if it reported it at start."""
    epochs: float
    """Local epochs asked for."""
    min_epochs: float
    """Fewest local epochs the client may run (early stopping)."""
    bytes_down: int
    """Bytes of the model sent to the client."""
    lr: float | None
    """Learning rate sent to the client (None: the config had no ``lr``)."""
    seed: int
    version_time: float = 0.0
    """Clock time at which ``dispatch_version`` was made."""
    bytes_up: int = 0
    """Bytes of the reply's arrays, once it arrived."""
    earliest_finish: float = 0.0
    """Lower bound of ``finish_time``, known at dispatch."""
    finish_time: float | None = None
    """Clock time at which the reply is delivered, known once it arrived."""
    message: Message | None = None
    message_id: str | None = None
    pushed_wall: float | None = None
    reply: Message | None = None
    arrived_wall: float | None = None
    failure: str | None = None
    """Why the task failed (error reply, timeout, malformed update), if it did."""
    failure_repeats: bool = False
    """Whether a retry would fail the same way (a ClientApp exception, a
    malformed update), as opposed to a transient fault (a timeout, a node
    that is down); see :mod:`fedstale.strategies.failfast`."""
    offline_at: float = math.inf
    """When the client goes offline (availability), known at dispatch; inf: never."""
    lost: str | None = None
    """Why the task was lost: its client went offline before it finished."""
    params: torch.Tensor | None = None
    """The client's returned model as a flat vector, once it arrived."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The reply's MetricRecord, once it arrived."""

    @property
    def arrived(self) -> bool:
        """True once a reply, an error or a timeout has ended the task."""
        return self.reply is not None or self.failure is not None

    @property
    def wall_duration(self) -> float:
        """Wall seconds from push to arrival (0 if not both happened)."""
        if self.pushed_wall is None or self.arrived_wall is None:
            return 0.0
        return self.arrived_wall - self.pushed_wall


@dataclass
class ClientUpdate:
    """A client's reply, ready to be merged.

    Attributes
    ----------
    task : Task
        The task it answers.
    params : torch.Tensor
        The client's local model x_local (flat).
    base : torch.Tensor
        The global model x_start the client started from (flat).
    staleness : int
        τ = server version now − ``task.dispatch_version``.
    num_examples : int
        Training examples the client used (its ``num-examples``).
    age : float
        Seconds since the version the client started from was made
        (staleness in time: clock now − ``task.version_time``).
    weight : float
        The weight the strategy gave it (filled by the strategy, for the log).
    accepted : bool
        False if the strategy left it out (quarantine, a filter).
    reason : str
        Why it was left out.
    """

    task: Task
    params: torch.Tensor
    base: torch.Tensor
    staleness: int
    num_examples: int
    age: float = 0.0
    weight: float = 1.0
    accepted: bool = True
    reason: str = ""

    def reject(self, reason: str) -> None:
        """Leave this update out of the aggregation, saying why."""
        self.accepted = False
        self.reason = reason
        self.weight = 0.0

    @property
    def delta(self) -> torch.Tensor:
        """Δ = x_local − x_start."""
        return self.params - self.base


def cut_at_offline(task: Task) -> None:
    """A task whose client goes offline before it finishes ends then, lost.

    Called once the clock has given the task its finish time; the task is
    then delivered at ``offline_at`` (no earlier than the lower bound the
    clock promised, which the dispatcher capped at ``offline_at``).
    """
    if task.finish_time is not None and task.finish_time > task.offline_at:
        task.finish_time = max(task.offline_at, task.earliest_finish)
        task.lost = f"offline at t={task.offline_at:.6g}"


def too_stale(
    staleness: int, age: float, max_staleness: int | None, max_seconds: float | None
) -> str | None:
    """Why an update ``staleness`` versions and ``age`` seconds old is dropped (None: kept).

    Versions first (Papaya's ``max_staleness``), then seconds since its base
    version was made (``max_staleness_seconds``).
    """
    if max_staleness is not None and staleness > max_staleness:
        return f"staleness > {max_staleness}"
    if max_seconds is not None and age > max_seconds:
        return f"staleness > {max_seconds:g}s"
    return None


def training_settings(
    config: Mapping[str, Any], lr_delay_alpha: float, last_staleness: int
) -> dict[str, Any]:
    """A task's ``epochs``, ``min_epochs`` and ``lr`` from the TRAIN config.

    ``min_epochs`` is what early stopping (``patience`` > 0) allows at the
    least: patience + 1 epochs. ``lr`` is the delay-aware γ0 / (1 + α_lr ·
    τ_last), with γ0 the config's ``lr`` and τ_last the staleness of the
    client's previous update; None when the config has no ``lr`` (none is
    sent).
    """
    epochs = float(config.get("local-epochs", 1))
    patience = int(config.get("patience", 0))
    min_epochs = epochs if patience <= 0 else min(epochs, patience + 1.0)
    lr = None
    if "lr" in config:
        lr = float(config["lr"]) / (1.0 + lr_delay_alpha * last_staleness)
    return {"epochs": epochs, "min_epochs": min_epochs, "lr": lr}


def task_seed(seed: int, client_id: int, index: int) -> int:
    """The training seed of a client's ``index``-th task (independent of timing)."""
    return int(np.random.SeedSequence([seed, 5, client_id, index]).generate_state(1)[0])
