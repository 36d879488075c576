"""The tasks of a run between dispatch and delivery.

:class:`InFlight` holds the tasks dispatched and not yet delivered (by task
id), the ones whose reply arrived (by message id, until
``aggregate_train`` takes them), the next task id, and in sync mode the
round's delivered tasks waiting for the barrier.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flwr.app import ConfigRecord

from .task import Task


class InFlight:
    """The run's tasks between dispatch and delivery.

    Attributes
    ----------
    tasks : dict[int, Task]
        Dispatched and not yet delivered, by task id.
    by_message : dict[str, Task]
        Tasks whose reply arrived, by the id of the message they answer.
    next_task_id : int
        The id of the next task.
    barrier : list[Task]
        Sync mode: the round's delivered tasks, merged once the last is in.
    """

    def __init__(self) -> None:
        self.tasks: dict[int, Task] = {}
        self.by_message: dict[str, Task] = {}
        self.next_task_id = 0
        self.barrier: list[Task] = []

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks.values())

    def free_slots(self, mode: str, concurrency: int) -> int:
        """Tasks to dispatch now: the empty slots (async), or a round once all are in (sync)."""
        if mode == "sync":
            return 0 if self.tasks else concurrency
        return concurrency - len(self.tasks)

    def new_id(self) -> int:
        """A fresh task id."""
        task_id = self.next_task_id
        self.next_task_id += 1
        return task_id

    def add(self, task: Task) -> None:
        """``task`` was dispatched."""
        self.tasks[task.task_id] = task

    def of_message(self, config: ConfigRecord) -> Task:
        """The task a TRAIN message's ConfigRecord belongs to."""
        return self.tasks[int(config["task-id"])]  # type: ignore[arg-type]

    def delivered(self, task: Task) -> None:
        """``task`` left the flight (its reply is being delivered)."""
        del self.tasks[task.task_id]

    def replied(self, task: Task, message_id: str) -> None:
        """The reply to ``task`` (answering message ``message_id``) arrived."""
        self.by_message[message_id] = task

    def forget(self, task: Task) -> None:
        """``task`` will not be aggregated: forget its reply."""
        self.by_message.pop(task.message_id or "", None)

    def claim(self, message_id: str) -> Task | None:
        """The task whose reply answers ``message_id``, removed (None if unknown)."""
        return self.by_message.pop(message_id, None)

    def sorted_tasks(self) -> list[Task]:
        """The tasks in flight by task id."""
        return sorted(self.tasks.values(), key=lambda t: t.task_id)

    def fields(self, names: tuple[str, ...]) -> list[dict[str, Any]]:
        """``names`` of each task in flight, by task id (for a resume point)."""
        return [{f: getattr(t, f) for f in names} for t in self.sorted_tasks()]
