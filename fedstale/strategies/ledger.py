"""Bookkeeping of a run: the totals behind ``metrics.csv`` and the CSV rows.

:class:`Ledger` counts every delivered task (accepted, dropped for
staleness, rejected at aggregation, failed), the bytes sent and received,
the largest client DP ε reported, and the staleness of the updates accepted
since the last evaluation. It builds the rows of ``clients.csv``
(:meth:`Ledger.client_row`) and the counting part of a ``metrics.csv`` row
(:meth:`Ledger.metrics_row`; the evaluator fills the accuracy columns).
Columns are documented in :mod:`fedstale.results`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import MetricRecord

from ..fairness import SUMMARY_COLUMNS
from .task import ClientUpdate, Task
from .trust_helpers import trust_cell

if TYPE_CHECKING:
    from ..aggregation.trust import TrustTracker
    from ..simulation.adversary import Adversary

TOTALS = (
    "updates",
    "accepted",
    "dropped",
    "rejected",
    "failures",
    "bytes_up",
    "bytes_down",
    "dense_bytes_up",
    "max_client_epsilon",
    "since_eval",
    "too_stale_in_a_row",
)
"""The totals a resume point saves (see :meth:`Ledger.totals`)."""


class Ledger:  # pylint: disable=too-many-instance-attributes
    """Run totals and CSV rows.

    Parameters
    ----------
    trust : TrustTracker | None (default: None)
        For the ``trust``/``quarantined`` columns (empty when None).
    adversary : Adversary | None (default: None)
        For the ``malicious`` column (empty when None).

    Attributes
    ----------
    updates : int
        Tasks delivered (every kind).
    accepted, dropped, rejected, failures : int
        Delivered tasks by outcome: merged, too stale, refused at
        aggregation, failed.
    bytes_up, bytes_down, dense_bytes_up : int
        Bytes of the replies received, of the models sent, and what the
        replies would have been uncompressed.
    max_client_epsilon : float | None
        Largest DP-SGD ε a client reported (None: none did).
    since_eval : list[int]
        Staleness of the updates accepted since the last ``metrics.csv`` row.
    too_stale_in_a_row : int
        Updates dropped as too stale since the last accepted one.
    """

    def __init__(
        self, trust: TrustTracker | None = None, adversary: Adversary | None = None
    ) -> None:
        self.trust = trust
        self.adversary = adversary
        self.updates = 0
        self.accepted = 0
        self.dropped = 0
        self.rejected = 0
        self.failures = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.dense_bytes_up = 0
        self.max_client_epsilon: float | None = None
        self.since_eval: list[int] = []
        self.too_stale_in_a_row = 0

    def count_delivered(self, task: Task, dense_nbytes: int) -> None:
        """Count a delivered task, its bytes and its client's ε.

        ``dense_nbytes`` is the size of an uncompressed reply (the model's).
        """
        self.updates += 1
        self.bytes_down += task.bytes_down
        if task.bytes_up:
            self.bytes_up += task.bytes_up
            self.dense_bytes_up += dense_nbytes
        epsilon = task.metrics.get("dp-epsilon")
        if epsilon is not None:
            self.max_client_epsilon = max(self.max_client_epsilon or 0.0, float(epsilon))

    def count_too_stale(self) -> int:
        """Count an update dropped for its staleness (in versions or seconds); return the streak."""
        self.dropped += 1
        self.too_stale_in_a_row += 1
        return self.too_stale_in_a_row

    def count_merged(self, update: ClientUpdate) -> None:
        """Count an update the strategy accepted or rejected."""
        if update.accepted:
            self.too_stale_in_a_row = 0
            self.accepted += 1
            self.since_eval.append(update.staleness)
        else:
            self.rejected += 1

    def client_row(  # pylint: disable=too-many-arguments
        self,
        task: Task,
        update: ClientUpdate | None,
        *,
        version: int,
        now: float,
        node: int,
        accepted: bool,
        reason: str,
    ) -> dict[str, Any]:
        """The ``clients.csv`` row of ``task``, delivered at ``version`` and time ``now``.

        ``update`` is None for a task that was not aggregated (failed or too
        stale); ``node`` is the index of the client's SuperNode.
        """
        finish = task.finish_time if task.finish_time is not None else now
        trust, adversary = self.trust, self.adversary
        return {
            "task_id": task.task_id,
            "client_id": task.client_id,
            "node": node,
            "dispatch_version": task.dispatch_version,
            "arrival_version": version,
            "staleness": version - task.dispatch_version,
            "weight": "" if update is None else update.weight,
            "dispatch_time": task.dispatch_time,
            "arrival_time": finish,
            "virtual_duration": finish - task.dispatch_time,
            "wall_duration": task.wall_duration,
            "fit_seconds": task.metrics.get("fit-seconds", ""),
            "num_examples": task.metrics.get("num-examples", task.num_examples or 0),
            "epochs": task.metrics.get("epochs-run", ""),
            "lr": "" if task.lr is None else task.lr,
            "train_loss": task.metrics.get("train-loss", ""),
            "accepted": accepted,
            "reason": reason,
            "trust": trust_cell(trust, task.client_id),
            "quarantined": "" if trust is None else trust.is_quarantined(task.client_id),
            "malicious": "" if adversary is None else adversary.is_malicious(task.client_id),
            "epsilon": task.metrics.get("dp-epsilon", ""),
            "bytes_up": task.bytes_up,
            "bytes_down": task.bytes_down,
        }

    def metrics_row(
        self, *, version: int, now: float, wall: float, central_epsilon: float | None
    ) -> dict[str, Any]:
        """A ``metrics.csv`` row of the totals now, accuracy columns empty.

        Starts a new ``mean_staleness`` window (:attr:`since_eval`).
        """
        row: dict[str, Any] = {
            "version": version,
            "virtual_time": now,
            "wall_time": wall,
            "updates": self.updates,
            "accepted": self.accepted,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "failures": self.failures,
            "quarantined": "" if self.trust is None else len(self.trust.quarantined),
            "mean_staleness": float(np.mean(self.since_eval)) if self.since_eval else "",
            "accuracy": "",
            "loss": "",
            "fed_accuracy": "",
            "fed_loss": "",
            "attack_success": "",
            "max_client_epsilon": _blank(self.max_client_epsilon),
            "central_epsilon": _blank(central_epsilon),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "compression_ratio": (
                self.dense_bytes_up / self.bytes_up if self.bytes_up else ""
            ),
            **dict.fromkeys(SUMMARY_COLUMNS, ""),  # the evaluator fills them with evaluation.fairness
        }
        self.since_eval = []
        return row

    def totals(self) -> dict[str, Any]:
        """Copies of the totals named in :data:`TOTALS` (for a resume point)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in TOTALS}

    def load_totals(self, totals: dict[str, Any]) -> None:
        """Put back what :meth:`totals` returned."""
        for name, value in totals.items():
            setattr(self, name, value)


def train_metrics(updates: list[ClientUpdate]) -> MetricRecord:
    """The merged updates' metrics: ``num-updates``, ``mean-staleness``, mean ``train-loss``."""
    losses = [u.task.metrics.get("train-loss") for u in updates]
    known = [float(x) for x in losses if x is not None]  # type: ignore[arg-type]
    record = MetricRecord(
        {
            "num-updates": len(updates),
            "mean-staleness": float(np.mean([u.staleness for u in updates])),
        }
    )
    if known:
        record["train-loss"] = float(np.mean(known))
    return record


def _blank(value: float | None) -> float | str:
    """A CSV cell: the value, or empty for None."""
    return "" if value is None else value
