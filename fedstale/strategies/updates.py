"""From replies to updates: each reply's task as a :class:`~fedstale.strategies.task.ClientUpdate`.

:func:`updates_of` is the first step of ``aggregate_train``: it matches each
reply to its task, takes the reply in if the courier has not yet, and turns
every intact one into an update with its staleness (in versions and in
seconds) and base model (and the
adversary's interception applied), releasing the base model's reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from flwr.app import Message

from ..progress import log_line
from .task import ClientUpdate

if TYPE_CHECKING:
    from ..simulation.adversary import Adversary
    from .courier import Courier
    from .inflight import InFlight
    from .versions import SnapshotStore


def updates_of(  # pylint: disable=too-many-arguments
    replies: Iterable[Message],
    *,
    inflight: InFlight,
    courier: Courier,
    snapshots: SnapshotStore,
    version: int,
    now: float,
    adversary: Adversary | None,
) -> list[ClientUpdate]:
    """The intact replies' tasks as updates at model ``version`` and clock time ``now``."""
    updates = []
    for reply in replies:
        task = inflight.claim(reply.metadata.reply_to_message_id)
        if task is None:
            log_line("ignoring a reply to an unknown message", warning=True)
            continue
        if not task.arrived:
            courier.receive(task, reply)
        if task.failure is None:
            assert task.params is not None
            update = ClientUpdate(
                task=task,
                params=task.params,
                base=snapshots.base(task.dispatch_version),
                staleness=version - task.dispatch_version,
                num_examples=int(task.metrics["num-examples"]),
                age=now - task.version_time,
            )
            if adversary is not None:
                adversary.intercept(update)
            updates.append(update)
        snapshots.release(task.dispatch_version, version)
    return updates
