"""Moving messages between the strategy and the SuperNodes.

:class:`Transport` owns the physical side of the event loop: which queued
message is pushed next (``Grid.push_messages``), which replies came back
(``Grid.pull_messages``) and which waited too long. It knows nothing of
models or staleness.

Two limits decide what is pushed:

- at most ``max_per_node`` messages in flight per SuperNode, because Flower
  runs two messages for one node against copies of the same ``Context`` and
  keeps only the last write;
- at most ``window`` messages in flight in all. With the virtual clock, the
  strategy merges replies in virtual-finish order, so pushing only the few
  jobs that finish first (in ``(earliest_finish, task_id)`` order) makes the
  simulation engine train them first, and a run that stops does not train
  jobs it will never merge. With the wall clock (deployment) there is no such
  order and the window is unlimited.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from flwr.app import Message
from flwr.serverapp import Grid


class Job(Protocol):
    """A message waiting for its node or for its reply."""

    task_id: int
    node_id: int
    earliest_finish: float
    message: Message | None
    message_id: str | None
    pushed_wall: float | None


class Transport:
    """Push queued jobs in virtual order, pull replies, notice timeouts.

    Parameters
    ----------
    nodes : Iterable[int]
        The SuperNodes' ids.
    max_per_node : int
        Messages in flight per node at most.
    window : int | None
        Messages in flight in all at most (None: no limit).
    timeout : float
        Wall seconds after which a pushed job without reply has timed out.
    """

    def __init__(
        self, nodes: Iterable[int], max_per_node: int, window: int | None, timeout: float
    ) -> None:
        self.max_per_node = max_per_node
        self.window = window
        self.timeout = timeout
        self._load = {node: 0 for node in nodes}
        self._waiting: list[Job] = []
        self._pushed: dict[str, Job] = {}

    @property
    def in_flight(self) -> int:
        """Jobs pushed and not yet answered."""
        return len(self._pushed)

    def enqueue(self, job: Job) -> None:
        """Queue ``job`` for pushing."""
        self._waiting.append(job)

    def push(self, grid: Grid) -> list[Job]:
        """Push what the limits allow; return the jobs that could not be pushed."""
        self._waiting.sort(key=lambda j: (j.earliest_finish, j.task_id))
        room = len(self._waiting) if self.window is None else self.window - len(self._pushed)
        chosen, kept = [], []
        for job in self._waiting:
            if len(chosen) < room and self._load[job.node_id] < self.max_per_node:
                chosen.append(job)
                self._load[job.node_id] += 1
            else:
                kept.append(job)
        self._waiting = kept
        if not chosen:
            return []
        ids = list(grid.push_messages([j.message for j in chosen]))  # type: ignore[misc]
        now = time.monotonic()
        rejected = []
        for job, message_id in zip(chosen, ids):
            job.pushed_wall = now
            if not message_id:
                self._load[job.node_id] -= 1
                rejected.append(job)
                continue
            job.message_id = message_id
            self._pushed[message_id] = job
        return rejected

    def pull(self, grid: Grid) -> list[tuple[Job, Message]]:
        """Replies that came back, with their jobs."""
        if not self._pushed:
            return []
        answered = []
        for reply in grid.pull_messages(list(self._pushed)):
            job = self._pushed.pop(reply.metadata.reply_to_message_id, None)
            if job is not None:
                self._load[job.node_id] -= 1
                answered.append((job, reply))
        return answered

    def expire(self) -> list[Job]:
        """Pushed jobs older than ``timeout``; they are forgotten (a late reply is ignored)."""
        now = time.monotonic()
        late = [
            (mid, job)
            for mid, job in self._pushed.items()
            if job.pushed_wall is not None and now - job.pushed_wall > self.timeout
        ]
        for message_id, job in late:
            del self._pushed[message_id]
            self._load[job.node_id] -= 1
        return [job for _, job in late]
