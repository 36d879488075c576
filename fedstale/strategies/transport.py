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

A message may carry several TRAIN tasks for one node (a
:class:`~fedstale.strategies.batches.Batch`, sized by a
:class:`~fedstale.strategies.batches.BatchRule`): when a node is free, its
waiting tasks go out together, earliest virtual finish first, and the
batch's reply comes back as one reply per task. The limits above count
messages, not tasks.

To a node whose ClientApp unpacks them (``packed`` nodes), every message
goes with its arrays packed into one Flower object, and its reply is
unpacked as it is pulled (:mod:`fedstale.packing`): fewer objects on every
hop, the same arrays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from flwr.app import Message
from flwr.serverapp import Grid

from ..batching import delivered_at, fit_seconds, task_seconds
from ..packing import pack_message, unpack_message
from .batches import Batch, BatchRule
from .polling import Poll

if TYPE_CHECKING:
    from .placement import Placement


class Job(Protocol):
    """A message waiting for its node or for its reply."""

    task_id: int
    node_id: int
    earliest_finish: float
    message: Message | None
    message_id: str | None
    pushed_wall: float | None


class Transport:
    """Push queued jobs in virtual order (batched per node), pull replies, notice timeouts.

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
    batching : BatchRule | None (default: None)
        Which TRAIN tasks may share a message; None: one task per message.
    packed : Iterable[int] (default: none)
        The nodes that are sent their messages' arrays packed.
    poll : Poll | None (default: None)
        Waits between pulls that brought nothing (:mod:`~fedstale.strategies.polling`);
        a pull with replies resets it. None: ``Poll()``.

    Attributes
    ----------
    messages_pushed, tasks_pushed : int
        Messages pushed, and the TRAIN tasks they carried, so far.
    first_train_time : float | None
        Unix time at which the first TRAIN task was pushed (None before).
    """

    def __init__(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        nodes: Iterable[int],
        max_per_node: int,
        window: int | None,
        timeout: float,
        batching: BatchRule | None = None,
        packed: Iterable[int] = (),
        poll: Poll | None = None,
    ) -> None:
        self.max_per_node = max_per_node
        self.poll = poll if poll is not None else Poll()
        self.packed = frozenset(packed)
        self.window = window
        self.timeout = timeout
        self.batching = batching if batching is not None else BatchRule()
        self._load = {node: 0 for node in nodes}
        self._waiting: list[Job] = []
        self._pushed: dict[str, Job | Batch] = {}
        self.messages_pushed = self.tasks_pushed = 0
        self._held_until: dict[int, float] = {}
        self.first_train_time: float | None = None

    @classmethod
    def for_placement(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        cls,
        placement: Placement,
        max_per_node: int,
        window: int | None,
        timeout: float,
        batching: BatchRule,
        poll: Poll | None = None,
    ) -> Transport:
        """A transport for ``placement``'s nodes, packing arrays for those whose ClientApp unpacks."""
        return cls(placement.nodes, max_per_node, window, timeout, batching, placement.packed_nodes, poll)

    @property
    def in_flight(self) -> int:
        """Jobs pushed and not yet answered."""
        return len(self._pushed)

    def enqueue(self, job: Job) -> None:
        """Queue ``job`` for pushing."""
        self._waiting.append(job)

    def push(self, grid: Grid) -> list[Job]:
        """Push what the limits allow; return the jobs that could not be pushed."""
        groups = self._choose()
        if not groups:
            return []
        outgoing: list[Job | Batch] = [Batch(group) if len(group) > 1 else group[0] for group in groups]
        messages: list[Message] = [o.message for o in outgoing]  # type: ignore[misc]
        messages = [pack_message(m) if m.metadata.dst_node_id in self.packed else m for m in messages]
        ids = list(grid.push_messages(messages))
        now = time.monotonic()
        rejected = []
        for group, entry, message_id in zip(groups, outgoing, ids):
            if not message_id:
                self._load[group[0].node_id] -= 1
                for job in group:
                    job.pushed_wall = now
                rejected.extend(group)
                continue
            if isinstance(entry, Batch):
                entry.pushed(message_id, now)
            else:
                entry.message_id, entry.pushed_wall = message_id, now
            self._pushed[message_id] = entry
            if self.batching.hold and self.batching.accepts(group[0]):
                self._held_until[group[0].node_id] = now + self.batching.hold
            self.messages_pushed += 1
            self.tasks_pushed += sum(1 for job in group if job.task_id >= 0)
            if self.first_train_time is None and self.tasks_pushed:
                self.first_train_time = time.time()
        return rejected

    def _choose(self) -> list[list[Job]]:
        """The waiting jobs to push now, grouped by message, in ``(earliest_finish, task_id)`` order.

        A job opens a new message when the window and its node's limit allow
        and its node is not held (a batch node within the batch rule's
        ``hold`` of its last push, while other messages are in flight); a
        TRAIN task joins the last message opened for its node in this push
        while the batch rule lets it.
        """
        self._waiting.sort(key=lambda j: (j.earliest_finish, j.task_id))
        room = len(self._waiting) if self.window is None else self.window - len(self._pushed)
        now, replies_due = time.monotonic(), bool(self._pushed)
        groups: list[list[Job]] = []
        open_batch: dict[int, list[Job]] = {}
        kept = []
        for job in self._waiting:
            batch = open_batch.get(job.node_id)
            held = replies_due and now < self._held_until.get(job.node_id, 0.0)
            if batch is not None and self.batching.fits(batch, job):
                batch.append(job)
            elif held and self.batching.accepts(job):
                kept.append(job)
            elif len(groups) < room and self._load[job.node_id] < self.max_per_node:
                groups.append([job])
                self._load[job.node_id] += 1
                if self.batching.accepts(job):
                    open_batch[job.node_id] = groups[-1]
                else:
                    open_batch.pop(job.node_id, None)
            else:
                kept.append(job)
        self._waiting = kept
        return groups

    def pull(self, grid: Grid) -> list[tuple[Job, Message]]:
        """Replies that came back, with their jobs (a batch's reply split per task)."""
        if not self._pushed:
            return []
        answered: list[tuple[Job, Message]] = []
        for reply in grid.pull_messages(list(self._pushed)):
            entry = self._pushed.pop(reply.metadata.reply_to_message_id, None)
            if entry is None:
                continue
            unpack_message(reply)
            self._load[entry.node_id] -= 1
            if isinstance(entry, Batch):
                self.batching.observe(entry.jobs, task_seconds(reply))
                self._hold_after_scan(entry.node_id, delivered_at(reply))
                answered.extend(entry.split(reply))
            else:
                if self.batching.accepts(entry):
                    self._observe_single(entry, reply)
                answered.append((entry, reply))
        if answered:
            self.poll.reset()
        return answered

    def _observe_single(self, job: Job, reply: Message) -> None:
        """Teach the batch rule a single task's compute: its ``fit-seconds``, else its round trip."""
        fit = fit_seconds(reply)
        if fit is not None:
            self.batching.observe([job], [fit])
        elif job.pushed_wall is not None:
            self.batching.observe_round_trip(job, time.monotonic() - job.pushed_wall)

    def _hold_after_scan(self, node: int, scanned: float | None) -> None:
        """Hold ``node`` until ``hold`` after the engine's scan at Unix time ``scanned``."""
        if self.batching.hold and scanned is not None:
            left = scanned + self.batching.hold - time.time()
            self._held_until[node] = time.monotonic() + left

    def expire(self) -> list[Job]:
        """Pushed jobs older than ``timeout``; they are forgotten (a late reply is ignored)."""
        now = time.monotonic()
        late = [
            (mid, entry)
            for mid, entry in self._pushed.items()
            if entry.pushed_wall is not None and now - entry.pushed_wall > self.timeout
        ]
        jobs: list[Job] = []
        for message_id, entry in late:
            del self._pushed[message_id]
            self._load[entry.node_id] -= 1
            jobs.extend(entry.jobs if isinstance(entry, Batch) else [entry])
        return jobs
