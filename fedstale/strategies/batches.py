"""Several TRAIN tasks per message: which tasks go together, and their replies.

Flower's simulation engine hands each SuperNode one message per 0.1 s
(``add_messages_to_queue`` in ``flwr/server/superlink/fleet/vce/vce_api.py``),
so one task per message caps a node at ~10 tasks a second whatever the
model. The transport therefore sends the tasks waiting for one SuperNode
together, in one ``train.batch`` message (:mod:`fedstale.batching`), to
nodes whose ClientApp accepts them (the ``prepare`` handshake); the reply is
split back into one reply per task, and the loop delivers them in
virtual-finish order exactly as if each had come alone.

:class:`BatchRule` decides how many tasks a message carries
(``comm.tasks_per_message``):

- ``1``: one task per message, the plain ``train`` message (as for a
  ClientApp that does not accept batches);
- ``N`` ≥ 2: the node's waiting tasks, earliest virtual finish first, up to
  ``N`` per message;
- ``0`` (auto): the waiting tasks, earliest virtual finish first, as long as
  the batch's estimated ClientApp compute stays within ``comm.batch_seconds``
  (always at least one task). The estimate is a task's work (training-set
  size × local epochs) times the ClientApp's seconds per unit of work, as
  measured in every batch reply and in the ``fit-seconds`` metric of a
  single task's reply (an exponential moving average). For a ClientApp that
  reports neither, the round trips of single tasks (push to reply, an upper
  bound of their compute) stand in; before any reply, a message holds one
  task.

A message with one task is the plain ``train`` message, whatever the rule,
so a deployment with one client per SuperNode sees exactly the messages it
saw before batches existed.

On Flower's simulation engine (the ServerApp's Grid is its ``InMemoryGrid``)
the transport also **holds** a node that has just answered for a moment
before sending it its next batch, while other messages are in flight: their
replies dispatch more tasks, which then join the batch. The hold ends at the
latest :data:`FEED_HOLD` after the scan that took the node's previous
message: the engine scans every :data:`FEED_INTERVAL`, so a batch pushed
before then is taken at the next scan, as it would have been without
holding. Holding therefore never delays a task, it only fills the message
the engine takes anyway (the margin, :data:`FEED_INTERVAL` −
:data:`FEED_HOLD`, covers the loop's own latency). The scan's time is the
message's ``metadata.delivered_at``, which the ClientApp echoes in a batch
reply; after a single-task message, whose scan is not known, the hold ends
:data:`FEED_HOLD` after its push (the scan came after the push).

So a batch lasts about ``batch_seconds`` at most (default 0.25 s, 2.5 of the
engine's 0.1 s feed intervals): long enough that the feed's wait is a small
part of each message's round trip, short enough that the earliest-due task,
always the first of its batch, is not held back for long by the ones after
it; a task whose own work exceeds the budget goes alone. Which tasks share a
message never changes what is trained or merged, only how fast: rows are
identical for any batch size (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flwr.app import Message, MessageType

from ..batching import pack_tasks, task_replies

if TYPE_CHECKING:
    from .placement import Placement
    from .transport import Job

SMOOTHING = 0.3
"""Weight of the newest measurement in the moving average of seconds per unit of work."""

FEED_INTERVAL = 0.1
"""Seconds Flower's simulation engine waits between two scans of the nodes' messages."""

FEED_HOLD = 0.75 * FEED_INTERVAL
"""Longest hold of a free node's next batch after its previous push, on the simulation engine."""


def on_simulation_engine(grid: object) -> bool:
    """Whether ``grid`` is Flower's simulation engine (its ``InMemoryGrid``)."""
    try:
        from flwr.superlink.grid import InMemoryGrid  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - another Flower version
        return False
    return isinstance(grid, InMemoryGrid)


def feed_hold(grid: object) -> float:
    """:data:`FEED_HOLD` if ``grid`` is Flower's simulation engine, else 0."""
    return FEED_HOLD if on_simulation_engine(grid) else 0.0


class BatchRule:
    """How many TRAIN tasks may share one message to a SuperNode.

    Parameters
    ----------
    tasks_per_message : int (default: 1)
        0: auto (within ``batch_seconds``); 1: one task per message; N: at most N.
    batch_seconds : float (default: 0.25)
        Auto mode: the ClientApp compute a batch is filled up to.
    nodes : Sequence[int] (default: ())
        The SuperNodes whose ClientApp accepts batches.
    default_examples : float (default: 1.0)
        Work of a task whose client's training-set size is unknown, in examples.
    hold : float (default: 0.0)
        Wall seconds after a push to a batch node during which its next
        message may wait for other replies (:data:`FEED_HOLD` on Flower's
        simulation engine; 0: never wait).
    """

    def __init__(
        self,
        tasks_per_message: int = 1,
        batch_seconds: float = 0.25,
        nodes: Sequence[int] = (),
        default_examples: float = 1.0,
        hold: float = 0.0,
    ) -> None:
        if tasks_per_message < 0:
            raise ValueError(f"tasks_per_message must be >= 0, got {tasks_per_message}")
        self.tasks_per_message, self.batch_seconds = tasks_per_message, batch_seconds
        self.nodes = frozenset(nodes) if tasks_per_message != 1 else frozenset()
        self.default_examples = default_examples
        self.hold = hold if self.nodes else 0.0
        self.seconds_per_work: float | None = None
        """Estimated ClientApp seconds per example·epoch (None until a reply)."""
        self.measured = False
        """Whether the estimate comes from the ClientApp's own timings (else from round trips)."""

    def accepts(self, job: Job) -> bool:
        """Whether ``job`` goes out in a batch message (a TRAIN task for a batch node)."""
        message = job.message
        return (
            job.node_id in self.nodes
            and message is not None
            and message.metadata.message_type == MessageType.TRAIN
        )

    def work(self, job: Job) -> float:
        """A task's work: training-set size × local epochs."""
        examples = getattr(job, "num_examples", None) or self.default_examples
        return float(examples) * float(getattr(job, "epochs", 1.0))

    def fits(self, batch: Sequence[Job], job: Job) -> bool:
        """Whether ``job`` may join ``batch`` (tasks already chosen for its node)."""
        if self.tasks_per_message >= 2:
            return len(batch) < self.tasks_per_message
        if self.tasks_per_message == 1 or self.seconds_per_work is None:
            return False
        work = sum(self.work(j) for j in batch) + self.work(job)
        return work * self.seconds_per_work <= self.batch_seconds

    def observe(self, jobs: Sequence[Job], seconds: Sequence[float]) -> None:
        """Learn from the ClientApp's ``seconds`` for each of ``jobs`` (a batch reply, a ``fit-seconds``)."""
        if len(seconds) != len(jobs) or not jobs:
            return
        work = sum(self.work(j) for j in jobs)
        if work <= 0:
            return
        self._update(sum(seconds) / work, fresh=not self.measured)
        self.measured = True

    def observe_round_trip(self, job: Job, seconds: float) -> None:
        """Learn from a single task's round trip (push to reply), until the ClientApp's timings are in."""
        work = self.work(job)
        if self.measured or work <= 0 or seconds <= 0:
            return
        self._update(seconds / work, fresh=False)

    def _update(self, rate: float, *, fresh: bool) -> None:
        previous = self.seconds_per_work
        self.seconds_per_work = rate if previous is None or fresh else (
            (1 - SMOOTHING) * previous + SMOOTHING * rate
        )


def batch_rule(
    placement: Placement, tasks_per_message: int, batch_seconds: float, grid: object
) -> BatchRule:
    """The run's rule: batches to the nodes that said they take them, holds on the simulation engine."""
    sizes = placement.num_examples.values()
    return BatchRule(
        tasks_per_message,
        batch_seconds,
        sorted(placement.batch_nodes),
        default_examples=sum(sizes) / len(sizes) if sizes else 1.0,
        hold=feed_hold(grid),
    )


@dataclass
class Batch:
    """TRAIN tasks for one SuperNode sent as one ``train.batch`` message.

    Pushed like a job (``message``, ``message_id``, ``pushed_wall``); each
    task's ``message_id`` becomes ``<batch message id>/<position>``, the id
    its split-off reply answers.
    """

    jobs: list[Job]
    message: Message = field(init=False)
    message_id: str | None = None
    pushed_wall: float | None = None

    def __post_init__(self) -> None:
        self.message = pack_tasks([j.message for j in self.jobs])  # type: ignore[misc]

    @property
    def node_id(self) -> int:
        """The SuperNode of the batch."""
        return self.jobs[0].node_id

    def pushed(self, message_id: str, wall: float) -> None:
        """The batch went out as ``message_id``: name its tasks after it."""
        self.message_id, self.pushed_wall = message_id, wall
        for position, job in enumerate(self.jobs):
            job.message_id, job.pushed_wall = f"{message_id}/{position}", wall

    def split(self, reply: Message) -> list[tuple[Job, Message]]:
        """Each task with its own reply, cut from the batch's ``reply``."""
        replies = task_replies(
            reply,
            [j.message_id or "" for j in self.jobs],
            [j.message.metadata.group_id for j in self.jobs],  # type: ignore[union-attr]
        )
        return list(zip(self.jobs, replies))
