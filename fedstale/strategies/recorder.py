"""Where the event loop reports what it observes: rows, model versions, resume points.

:class:`fedstale.results.RunRecorder` writes a run folder; the two recorders
here keep nothing (:class:`NullRecorder`) or keep the rows in lists
(:class:`MemoryRecorder`, for tests and notebooks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from flwr.app import ArrayRecord


class Recorder(Protocol):
    """Receives what the loop observes; see :class:`fedstale.results.RunRecorder`."""

    def on_update(self, row: dict[str, Any]) -> None:
        """One received update (a row of ``clients.csv``)."""

    def on_evaluate(self, row: dict[str, Any]) -> None:
        """One evaluation (a row of ``metrics.csv``)."""

    def on_client_accuracy(self, rows: list[dict[str, Any]]) -> None:
        """One evaluation's per-client accuracies (rows of ``client_accuracy.csv``)."""

    def on_target(self, row: dict[str, Any]) -> None:
        """A target accuracy reached for the first time (a row of ``targets.csv``)."""

    def on_model(self, version: int, get_arrays: Callable[[], ArrayRecord]) -> None:
        """A new global model version."""

    def on_resume_point(
        self, version: int, get_state: Callable[[], dict[str, Any]], force: bool = False
    ) -> None:
        """A point the run could be resumed from (see :mod:`fedstale.resume`)."""


class NullRecorder(Recorder):
    """A recorder that keeps nothing (every method of :class:`Recorder` does nothing)."""


class MemoryRecorder(NullRecorder):
    """A recorder that keeps the rows in lists (for tests and notebooks).

    Attributes
    ----------
    updates : list[dict[str, Any]]
        The ``clients.csv`` rows, in order.
    evaluations : list[dict[str, Any]]
        The ``metrics.csv`` rows, in order.
    client_accuracy : list[dict[str, Any]]
        The ``client_accuracy.csv`` rows, in order.
    targets : list[dict[str, Any]]
        The ``targets.csv`` rows, in order.
    versions : list[int]
        The model versions made.
    """

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.client_accuracy: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        self.versions: list[int] = []

    def on_update(self, row: dict[str, Any]) -> None:
        """Keep the row."""
        self.updates.append(row)

    def on_evaluate(self, row: dict[str, Any]) -> None:
        """Keep the row."""
        self.evaluations.append(row)

    def on_client_accuracy(self, rows: list[dict[str, Any]]) -> None:
        """Keep the rows."""
        self.client_accuracy.extend(rows)

    def on_target(self, row: dict[str, Any]) -> None:
        """Keep the row."""
        self.targets.append(row)

    def on_model(self, version: int, get_arrays: Callable[[], ArrayRecord]) -> None:
        """Keep the version number."""
        self.versions.append(version)
