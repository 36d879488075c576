"""Clocks: in which order replies are delivered to the strategy, and when.

:class:`VirtualClock` is a conservative discrete-event simulator (as in FLSim,
FedScale and Plato): every task gets a virtual finish time from a
:class:`~fedstale.simulation.delays.DelayModel`, and replies are delivered in
virtual-finish order, whatever order the Ray workers physically finish in. A
reply is delivered only once it has physically arrived *and* no task still in
flight could finish earlier (its lower bound ``earliest_finish`` says so), so
results are identical for any number of workers, and no wall time is slept.

:class:`WallClock` is the deployment counterpart: time is the wall clock and
replies are delivered in arrival order.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .delays import DelayModel

if TYPE_CHECKING:
    from ..strategies.task import Task


class Clock(ABC):
    """Orders replies and keeps the current time of the federation."""

    name: str = ""
    default_push_window: int | None = None
    """Messages in flight in all, unless the strategy says (None: no limit)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._wall_start = time.monotonic()

    def start(self) -> None:
        """Reset the clock at the start of a run."""
        self.now = 0.0
        self._wall_start = time.monotonic()

    def wall_elapsed(self) -> float:
        """Wall seconds since :meth:`start`."""
        return time.monotonic() - self._wall_start

    def resume(self, now: float, wall_elapsed: float) -> None:
        """Continue a resumed run: time ``now``, ``wall_elapsed`` seconds already run."""
        self.now = now
        self._wall_start = time.monotonic() - wall_elapsed

    @abstractmethod
    def schedule(self, task: Task) -> None:
        """Set ``task.earliest_finish`` when the task is dispatched."""

    @abstractmethod
    def complete(
        self, task: Task, *, num_examples: int, epochs: float, bytes_up: int
    ) -> None:
        """Set ``task.finish_time`` once its reply has arrived."""

    @abstractmethod
    def fail(self, task: Task) -> None:
        """Set ``task.finish_time`` of a task that failed."""

    @abstractmethod
    def next_due(self, tasks: Iterable[Task]) -> Task | None:
        """Return the task whose reply is delivered next, or None to wait."""

    def advance(self, task: Task) -> None:
        """Move the clock to the delivery of ``task``."""
        assert task.finish_time is not None
        self.now = max(self.now, task.finish_time)

    @abstractmethod
    def reached(self, at: float, tasks: Iterable[Task]) -> bool:
        """Whether an event at time ``at`` (a client coming online, a timer) is due
        before any reply of ``tasks`` can be delivered."""

    def move_to(self, at: float) -> None:
        """Move the clock to an event at time ``at`` that :meth:`reached`."""
        self.now = max(self.now, at)


class VirtualClock(Clock):
    """Discrete-event virtual time driven by a delay model.

    Parameters
    ----------
    delays : DelayModel
        Draws client speeds, jitter and communication time.
    min_upload_fraction : float (default: 1.0)
        Smallest upload size as a fraction of the model size; used only for
        the lower bound of a task's finish time (1.0 for dense updates).
    """

    name = "virtual"

    def __init__(self, delays: DelayModel, min_upload_fraction: float = 1.0) -> None:
        super().__init__()
        # Replies are merged in virtual-finish order: push only about as many
        # messages as this machine can train at once, earliest finish first.
        self.default_push_window = (os.cpu_count() or 1) + 1
        self.delays = delays
        self.min_upload_fraction = min_upload_fraction

    def _duration(
        self, task: Task, num_examples: int, epochs: float, bytes_up: int
    ) -> float:
        compute = self.delays.compute_time(
            task.client_id, task.index, num_examples, epochs
        )
        return compute + self.delays.communication_time(task.bytes_down, bytes_up)

    def schedule(self, task: Task) -> None:
        """Lower-bound the finish time from the least work the task may do."""
        task.earliest_finish = task.dispatch_time + self._duration(
            task,
            task.num_examples or 0,
            task.min_epochs,
            int(task.bytes_down * self.min_upload_fraction),
        )

    def complete(
        self, task: Task, *, num_examples: int, epochs: float, bytes_up: int
    ) -> None:
        """Finish time from the work the client reports it did."""
        finish = task.dispatch_time + self._duration(
            task, num_examples, epochs, bytes_up
        )
        task.finish_time = max(finish, task.earliest_finish)

    def fail(self, task: Task) -> None:
        """A failed task ends when its full planned work would have."""
        task.finish_time = max(
            task.dispatch_time
            + self._duration(task, task.num_examples or 0, task.epochs, task.bytes_down),
            task.earliest_finish,
        )

    def reached(self, at: float, tasks: Iterable[Task]) -> bool:
        """``at`` ≤ every delivery still possible: arrived tasks' finish, the others' lower bound.

        An event and a delivery at the same instant: the event goes first.
        """
        bound = min(
            (t.finish_time if t.arrived else t.earliest_finish for t in tasks), default=math.inf
        )
        return at <= bound  # type: ignore[operator]

    def next_due(self, tasks: Iterable[Task]) -> Task | None:
        """The arrived task with the earliest finish, if nothing can precede it."""
        candidate: Task | None = None
        bound = (math.inf, math.inf)
        for task in tasks:
            if task.arrived:
                assert task.finish_time is not None
                if candidate is None or (task.finish_time, task.task_id) < (
                    candidate.finish_time,
                    candidate.task_id,
                ):
                    candidate = task
            else:
                bound = min(bound, (task.earliest_finish, task.task_id))
        if candidate is None:
            return None
        assert candidate.finish_time is not None
        if (candidate.finish_time, candidate.task_id) < bound:
            return candidate
        return None


class WallClock(Clock):
    """Wall-clock time; replies are delivered in arrival order (deployment)."""

    name = "wall"

    def schedule(self, task: Task) -> None:
        """Nothing is known in advance."""
        task.earliest_finish = task.dispatch_time

    def complete(
        self, task: Task, *, num_examples: int, epochs: float, bytes_up: int
    ) -> None:
        """The reply finished when it arrived."""
        task.finish_time = self.wall_elapsed()

    def fail(self, task: Task) -> None:
        """The failure happened when it was noticed."""
        task.finish_time = self.wall_elapsed()

    def reached(self, at: float, tasks: Iterable[Task]) -> bool:
        """Whether ``at`` wall seconds have elapsed since the start."""
        return at <= self.wall_elapsed()

    def move_to(self, at: float) -> None:
        """The event happens now (its wall time, which is ``at`` or later)."""
        self.now = max(self.now, self.wall_elapsed())

    def next_due(self, tasks: Iterable[Task]) -> Task | None:
        """The earliest arrival among arrived tasks."""
        arrived = [t for t in tasks if t.arrived]
        if not arrived:
            return None
        return min(arrived, key=lambda t: (t.finish_time, t.task_id))
