"""From the transport to the tasks: replies arrive, late or lost messages fail.

:class:`Courier` runs one round of the transport (time out what waited too
long, push what the limits allow, pull what came back) and turns each event
into the task's outcome: an intact reply gets its finish time from the
clock; an error reply, a malformed update, a timeout or a failed push marks
the task failed (it ends when its planned work would have). A task whose
client goes offline before that time is lost instead, and ends then. Federated
evaluation jobs travel the same way and are just marked done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid

from .evaluator import EvalJob
from .replies import read_reply
from .task import Task, cut_at_offline

if TYPE_CHECKING:
    from ..simulation.clock import Clock
    from .inflight import InFlight
    from .transport import Transport


class Courier:
    """Moves the run's messages and records what happened to each task.

    Parameters
    ----------
    transport : Transport
        Pushes, pulls and times out messages.
    clock : Clock
        Gives arrived and failed tasks their finish time.
    inflight : InFlight
        Keeps the tasks whose reply arrived.
    decode : Callable[[Task, ArrayRecord], torch.Tensor]
        The strategy's ``decode_update``.
    timeout : float
        Wall seconds after which a pushed message without reply failed.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        transport: Transport,
        clock: Clock,
        inflight: InFlight,
        decode: Callable[[Task, ArrayRecord], torch.Tensor],
        timeout: float,
    ) -> None:
        self.transport, self.clock, self.inflight = transport, clock, inflight
        self.decode, self.timeout = decode, timeout

    def pump(self, grid: Grid) -> None:
        """Time out late messages, push queued ones, take in the replies."""
        for job in self.transport.expire():
            self.fail(job, f"no reply within {self.timeout:g}s")  # type: ignore[arg-type]
        for job in self.transport.push(grid):
            self.fail(job, "message could not be pushed")  # type: ignore[arg-type]
        for job, reply in self.transport.pull(grid):
            if isinstance(job, Task):
                self.inflight.replied(job, reply.metadata.reply_to_message_id)
                self.receive(job, reply)
            else:
                job.finish(reply)  # type: ignore[attr-defined]

    def fail(self, job: Task | EvalJob, reason: str) -> None:
        """``job`` failed because of ``reason`` (an evaluation job is just done)."""
        if isinstance(job, EvalJob):
            job.finish()
            return
        job.failure = reason
        job.arrived_wall = time.monotonic()
        self.clock.fail(job)
        cut_at_offline(job)

    def receive(self, task: Task, reply: Message) -> None:
        """Record an arrived reply: validate it and give it its finish time."""
        task.reply = reply
        task.arrived_wall = time.monotonic()
        failure = read_reply(task, reply, self.decode)
        if failure is not None:
            self.fail(task, failure)
            return
        self.clock.complete(
            task,
            num_examples=int(task.metrics["num-examples"]),
            epochs=float(task.metrics.get("epochs-run", task.epochs)),
            bytes_up=task.bytes_up,
        )
        cut_at_offline(task)
