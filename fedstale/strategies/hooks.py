"""What a strategy defines: the update rule and the loop's optional hooks.

A strategy subclasses :class:`~fedstale.strategies.base.AsyncStrategy` and
implements :meth:`StrategyHooks.aggregate_updates`; the other hooks have
defaults that fit most rules. The trust helpers (``_set_aside_quarantined``,
``_trust_weight``, ``_score``) are for rules that weigh clients by trust.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ArrayRecord

from . import trust_helpers
from .replies import decode_model
from .task import ClientUpdate, Task

if TYPE_CHECKING:
    from ..aggregation.privacy import CentralGaussianMechanism
    from ..aggregation.trust import TrustTracker
    from .versions import GlobalModel, SnapshotStore


class StrategyHooks(ABC):
    """The methods a strategy overrides; :class:`AsyncStrategy` calls them.

    Attributes
    ----------
    trust : TrustTracker | None
        The strategy's trust tracker (None: trust off).
    central_dp : CentralGaussianMechanism | None
        Server-side DP (None: off).
    global_model : GlobalModel
        The global model (set at the start of a run).
    snapshots : SnapshotStore
        Base models of the tasks in flight.
    """

    trust: TrustTracker | None
    central_dp: CentralGaussianMechanism | None
    global_model: GlobalModel
    snapshots: SnapshotStore

    @abstractmethod
    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """Merge ``updates`` into ``model`` (flat vectors).

        Called with one update at a time in async mode and with a whole
        round in sync mode. Set each ``update.weight`` to the weight used,
        and ``update.reject(reason)`` the ones left out.

        Returns
        -------
        torch.Tensor | None
            The new global model (a new model version), or None if the model
            does not change yet (e.g. FedBuff's buffer is not full).
        """

    def task_directives(self, task: Task) -> dict[str, Any]:
        """Extra TRAIN-config entries for one task (none by default).

        Strategies whose clients need per-task instructions (secure
        aggregation's group and slot) override this.
        """
        del task
        return {}

    def decode_update(self, task: Task, arrays: ArrayRecord) -> torch.Tensor:
        """The client's model x_local (flat) from its reply's ArrayRecord.

        A dense reply is read with the global model's layout
        (:meth:`ModelCodec.flatten`). A compressed one
        (:mod:`fedstale.aggregation.compression`, recognised by its
        ``fedstale.delta.*`` keys) carries Δ̂ only: x_local = x_base + Δ̂,
        where x_base is the model the task was dispatched with. Strategies
        whose clients encode their updates otherwise (secure aggregation)
        override it.

        Raises
        ------
        UpdateError
            If the arrays do not decode to a finite model; for a compressed
            reply, naming the offending key.
        """
        return decode_model(
            arrays, self.global_model.codec, lambda: self.snapshots.base(task.dispatch_version)
        )

    def on_task_dropped(self, task: Task) -> None:
        """A task that will not be aggregated (failed or too stale).

        Strategies that group tasks (secure aggregation) override this.
        """

    def next_timer(self) -> float:
        """Clock time at which the strategy wants :meth:`on_timer` called (inf: never).

        FedBuff with ``aggregation_delay`` flushes a buffer that has waited
        long enough; see :mod:`fedstale.strategies.wakeups`.
        """
        return math.inf

    def on_timer(self, model: torch.Tensor) -> torch.Tensor | None:
        """The timer of :meth:`next_timer` fired: the new model, or None if it does not change."""
        del model
        return None

    def extra_run_state(self) -> dict[str, Any]:
        """A subclass's own run state (server momentum, filters, ...)."""
        return {}

    def load_extra_run_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`extra_run_state` returned."""
        del state

    def central_epsilon(self) -> float | None:
        """ε spent by server-side (central) DP so far; None without it."""
        return None if self.central_dp is None else self.central_dp.epsilon()

    # Trust helpers for aggregate_updates (see fedstale.strategies.trust_helpers)

    def _set_aside_quarantined(
        self, updates: list[ClientUpdate]
    ) -> tuple[list[ClientUpdate], list[ClientUpdate]]:
        """Split updates into (merged, quarantined); the latter are rejected."""
        return trust_helpers.set_aside_quarantined(self.trust, updates)

    def _trust_weight(self, update: ClientUpdate) -> float:
        """The client's trust (0 in quarantine; 1 when trust is off)."""
        return trust_helpers.trust_weight(self.trust, update)

    def _score(self, updates: Iterable[ClientUpdate], reference_deltas: torch.Tensor) -> None:
        """Fold each update's agreement with the reference set into its client's trust.

        r, ν and c̃ come from ``reference_deltas`` [m, d]
        (:func:`fedstale.aggregation.trust.reference_statistics`).
        """
        trust_helpers.score(self.trust, updates, reference_deltas)
