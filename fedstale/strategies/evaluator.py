"""Evaluation: when, centralized and federated, and the target accuracy.

The loop evaluates at version 0, every ``eval_every`` versions, at the
version budget and once more at the end if anything happened since the last
row. :class:`Evaluator` fills the accuracy columns of a ``metrics.csv`` row
(the counts come from :class:`~fedstale.strategies.ledger.Ledger`): the
centralized ``evaluate_fn`` on the server's test set, and federated
evaluation, where sampled clients evaluate the model on their own data
(EVALUATE messages through the same transport; training replies keep
arriving meanwhile and wait).

Two more outputs, reported by :meth:`Evaluator.report` before the row:
with ``client-accuracy`` and ``client-examples`` in the centralized
metrics (``evaluation.fairness``; see
:func:`fedstale.builders.make_evaluate_fn`) one ``client_accuracy.csv`` row
per client (:data:`~fedstale.fairness.CLIENT_ACCURACY_COLUMNS`) and their
summary in the row's ``client_acc_*`` columns; and the first evaluation
whose ``accuracy`` reaches each of ``targets`` (a ``targets.csv`` row,
:data:`~fedstale.fairness.TARGETS_COLUMNS`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import Result

from ..fairness import summary_columns
from .recorder import Recorder
from .transport import Transport


@dataclass
class EvalJob:
    """A federated-evaluation message waiting for its node or its reply."""

    message: Message
    node_id: int
    client_id: int
    message_id: str | None = None
    pushed_wall: float | None = None
    reply: Message | None = None
    done: bool = False
    earliest_finish: float = -math.inf
    task_id: int = -1

    def finish(self, reply: Message | None = None) -> None:
        """The job is over: with ``reply``, or without one (lost, timed out)."""
        if reply is not None:
            self.reply = reply
        self.done = True


class Evaluator:
    """Decides when to evaluate, runs the evaluations, remembers the last one.

    Parameters
    ----------
    every : int (default: 1)
        Evaluate every this many model versions (at least 1).
    federated_clients : int (default: 0)
        Clients asked for federated evaluation each time (0: none).
    evaluate_fn : Callable[[int, ArrayRecord], MetricRecord | None] | None
        Centralized evaluation ``(version, arrays) -> MetricRecord``.
    targets : tuple[float, ...] (default: ())
        Accuracies whose first reach is reported (:meth:`report`).

    Attributes
    ----------
    last_version, last_updates : int
        Model version and delivered-task count at the last row (-1: none yet).
    last_accuracy : float | None
        ``accuracy`` of the last centralized evaluation that reported one.
    reached : list[float]
        The targets reached so far (saved with the run state).
    client_rows, target_rows : list[dict[str, Any]]
        The last evaluation's ``client_accuracy.csv`` and ``targets.csv`` rows.
    seconds : float
        Wall seconds spent evaluating (centralized and federated) so far.
    """

    def __init__(
        self,
        every: int = 1,
        federated_clients: int = 0,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        targets: tuple[float, ...] = (),
    ) -> None:
        self.every = max(1, every)
        self.federated_clients = federated_clients
        self.evaluate_fn = evaluate_fn
        self.last_version = -1
        self.last_updates = -1
        self.last_accuracy: float | None = None
        self.targets = tuple(targets)
        self.reached: list[float] = []
        self.client_rows: list[dict[str, Any]] = []
        self.target_rows: list[dict[str, Any]] = []
        self.seconds = 0.0

    def due(self, version: int, num_rounds: int) -> bool:
        """Whether a new ``version`` is evaluated (every ``every``, and the last)."""
        return version % self.every == 0 or version >= num_rounds

    def is_current(self, version: int, updates: int) -> bool:
        """Whether the last row already shows ``version`` after ``updates`` tasks."""
        return self.last_version == version and self.last_updates == updates

    def target_reached(self, target_accuracy: float | None) -> str:
        """The stop reason once the last accuracy reaches the target ("" before)."""
        if (
            target_accuracy is not None
            and self.last_accuracy is not None
            and self.last_accuracy >= target_accuracy
        ):
            return f"target accuracy {target_accuracy:g} reached"
        return ""

    def evaluate(  # pylint: disable=too-many-arguments
        self,
        row: dict[str, Any],
        *,
        updates: int,
        arrays: Callable[[], ArrayRecord],
        federated: Callable[[], MetricRecord | None],
        result: Result,
    ) -> dict[str, Any]:
        """Fill the accuracy columns of ``row`` (at ``row["version"]``) and keep the metrics.

        Parameters
        ----------
        row : dict[str, Any]
            The row with the run's totals (see ``Ledger.metrics_row``).
        updates : int
            Tasks delivered so far.
        arrays : Callable[[], ArrayRecord]
            The model to evaluate.
        federated : Callable[[], MetricRecord | None]
            Runs one federated evaluation (called only with
            ``federated_clients`` > 0).
        result : Result
            Receives the metrics, keyed by version.

        Returns
        -------
        dict[str, Any]
            ``row``.
        """
        version = row["version"]
        self.client_rows, self.target_rows = [], []
        started = time.perf_counter()
        if self.evaluate_fn is not None:
            metrics = self.evaluate_fn(version, arrays())
            if metrics is not None:
                result.evaluate_metrics_serverapp[version] = metrics
                row["accuracy"] = metrics.get("accuracy", "")
                row["loss"] = metrics.get("loss", "")
                row["attack_success"] = metrics.get("attack-success", "")
                if "accuracy" in metrics:
                    self.last_accuracy = float(metrics["accuracy"])  # type: ignore[arg-type]
                    self._check_targets(row, self.last_accuracy)
                if "client-accuracy" in metrics:
                    self._per_client(row, metrics)
        if self.federated_clients > 0:
            fed = federated()
            if fed is not None:
                result.evaluate_metrics_clientapp[version] = fed
                row["fed_accuracy"] = fed.get("accuracy", "")
                row["fed_loss"] = fed.get("loss", "")
        self.last_version = version
        self.last_updates = updates
        self.seconds += time.perf_counter() - started
        return row

    def report(self, row: dict[str, Any], recorder: Recorder) -> None:
        """Give ``recorder`` the last evaluation's client and target rows, then ``row``."""
        if self.client_rows:
            recorder.on_client_accuracy(self.client_rows)
        for target_row in self.target_rows:
            recorder.on_target(target_row)
        recorder.on_evaluate(row)

    def _check_targets(self, row: dict[str, Any], accuracy: float) -> None:
        for target in self.targets:
            if target not in self.reached and accuracy >= target:
                self.reached.append(target)
                self.target_rows.append(
                    {"target": target, "version": row["version"],
                     "virtual_time": row["virtual_time"], "updates": row["updates"]}
                )

    def _per_client(self, row: dict[str, Any], metrics: MetricRecord) -> None:
        accuracies = [float(a) for a in metrics["client-accuracy"]]  # type: ignore[union-attr]
        sizes = [int(n) for n in metrics["client-examples"]]  # type: ignore[union-attr]
        self.client_rows = [
            {"version": row["version"], "virtual_time": row["virtual_time"], "client_id": cid,
             "num_examples": n, "accuracy": acc}
            for cid, (n, acc) in enumerate(zip(sizes, accuracies))
        ]
        row.update(summary_columns(accuracies))

    @staticmethod
    def collect(  # pylint: disable=too-many-arguments
        messages: list[Message],
        transport: Transport,
        pump: Callable[[], None],
        timeout: float,
    ) -> list[Message]:
        """Send EVALUATE ``messages``; return the replies with content within ``timeout``.

        ``pump`` moves the transport (and the training replies) meanwhile;
        between pumps the transport's ``poll`` waits.
        """
        jobs = []
        for message in messages:
            client = int(message.content["config"]["client-id"])  # type: ignore[arg-type]
            job = EvalJob(message=message, node_id=message.metadata.dst_node_id, client_id=client)
            transport.enqueue(job)
            jobs.append(job)
        deadline = time.monotonic() + timeout
        while not all(j.done for j in jobs) and time.monotonic() < deadline:
            pump()
            if not all(j.done for j in jobs):
                transport.poll.wait()
        return [j.reply for j in jobs if j.reply is not None and j.reply.has_content()]
