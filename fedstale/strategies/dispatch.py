"""Dispatching: from a selected client to a TRAIN message queued for its node.

:class:`Dispatcher` makes a client's next :class:`~fedstale.strategies.task.Task`
(its index, training seed, delay-aware learning rate, epochs, the model
version, when its client goes offline and the virtual clock's lower bound
of its finish time, no later than that), keeps the
base model it starts from, builds its TRAIN message and queues it on the
transport. After a resume it dispatches the tasks that were in flight again,
exactly as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType

from .task import Task, task_seed, training_settings

if TYPE_CHECKING:
    from ..simulation.adversary import Adversary
    from ..simulation.clock import Clock
    from .inflight import InFlight
    from .placement import Placement
    from .pool import ClientPool
    from .transport import Transport
    from .versions import GlobalModel, SnapshotStore


class Dispatcher:  # pylint: disable=too-many-instance-attributes
    """Creates tasks and their TRAIN messages, and queues them for their nodes.

    Parameters
    ----------
    pool : ClientPool
        Counts each client's tasks and marks it busy.
    placement : Placement
        The client → node map and the clients' training-set sizes.
    clock : Clock
        Gives each task its dispatch time and lower-bound finish time.
    inflight : InFlight
        Receives the new tasks.
    snapshots : SnapshotStore
        Keeps each task's base model.
    model : GlobalModel
        The model sent (its current version and layout).
    transport : Transport
        Queues the messages.
    seed : int
        Seed of the per-task training seeds.
    lr_delay_alpha : float
        α_lr of the delay-aware learning rate.
    adversary : Adversary | None
        Adds the attack directives of malicious clients.
    directives : Callable[[Task], dict[str, Any]]
        The strategy's extra per-task entries (``task_directives``).
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        *,
        pool: ClientPool,
        placement: Placement,
        clock: Clock,
        inflight: InFlight,
        snapshots: SnapshotStore,
        model: GlobalModel,
        transport: Transport,
        seed: int,
        lr_delay_alpha: float,
        adversary: Adversary | None,
        directives: Callable[[Task], dict[str, Any]],
    ) -> None:
        self.pool, self.placement, self.clock = pool, placement, clock
        self.inflight, self.snapshots, self.model = inflight, snapshots, model
        self.transport = transport
        self.seed, self.lr_delay_alpha = seed, lr_delay_alpha
        self.adversary, self.directives = adversary, directives

    def new_task(self, client_id: int, version: int, config: ConfigRecord) -> Task:
        """The next task of ``client_id``, on model ``version``, now in flight."""
        index = self.pool.start_task(client_id)
        last_staleness = self.pool.last_staleness.get(client_id, 0)
        task = Task(
            task_id=self.inflight.new_id(),
            client_id=client_id,
            node_id=self.placement.node_of[client_id],
            index=index,
            dispatch_version=version,
            dispatch_time=self.clock.now,
            num_examples=self.placement.num_examples.get(client_id),
            bytes_down=self.model.codec.nbytes,
            seed=task_seed(self.seed, client_id, index),
            version_time=self.model.made_at,
            **training_settings(config, self.lr_delay_alpha, last_staleness),
        )
        self._schedule(task)
        self.inflight.add(task)
        self.snapshots.acquire(version, self.model.flat)
        return task

    def _schedule(self, task: Task) -> None:
        """The clock's lower bound of the finish time, capped when the client goes offline."""
        task.offline_at = self.pool.availability.offline_after(task.client_id, task.dispatch_time)
        self.clock.schedule(task)
        task.earliest_finish = min(task.earliest_finish, task.offline_at)

    def train_message(self, task: Task, arrays: ArrayRecord, config: ConfigRecord) -> Message:
        """The TRAIN message of ``task`` (kept on the task).

        ``config`` plus the task's ``task-id``, ``seed``, ``lr`` (when set),
        the adversary's directives and the strategy's.
        """
        extra: dict[str, Any] = {"task-id": task.task_id, "seed": task.seed}
        extra |= {} if task.lr is None else {"lr": task.lr}
        extra |= self.adversary.task_config(task.client_id) if self.adversary else {}
        task.message = self.placement.message(
            task.client_id,
            MessageType.TRAIN,
            arrays,
            config,
            task.dispatch_version,
            extra | self.directives(task),
        )
        return task.message

    def enqueue(self, messages: Iterable[Message]) -> None:
        """Queue the tasks of TRAIN ``messages`` (built by :meth:`train_message`)."""
        for message in messages:
            self.transport.enqueue(self.inflight.of_message(message.content["config"]))

    def requeue(self, tasks: list[dict[str, Any]], config: ConfigRecord) -> None:
        """Dispatch again the tasks in flight at a resume point, as they were.

        ``tasks`` are their dispatch fields
        (:data:`~fedstale.strategies.run_state.DISPATCH_FIELDS`); each goes
        out with its own base model.
        """
        for fields in tasks:
            task = Task(node_id=self.placement.node_of[fields["client_id"]], **fields)
            self._schedule(task)
            self.inflight.add(task)
            self.pool.busy.add(task.client_id)
            base = self.snapshots.base(task.dispatch_version)
            self.snapshots.acquire(task.dispatch_version, base)
            self.train_message(task, self.model.codec.unflatten(base), config)
            self.transport.enqueue(task)
