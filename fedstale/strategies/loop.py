"""The steps of the event loop, and the parts of one run.

:class:`EventLoop` is the base of :class:`~fedstale.strategies.base.AsyncStrategy`,
whose :meth:`~fedstale.strategies.base.AsyncStrategy.start` runs the loop:
dispatch, take the next due task from the clock (pumping the transport when
none is due), :meth:`EventLoop.process` it, and after a new version evaluate and offer a
resume point. Each step is a few calls to the run's parts:

- ``pool`` (:class:`~fedstale.strategies.pool.ClientPool`): who trains next;
- ``placement`` (:class:`~fedstale.strategies.placement.Placement`): which
  SuperNode hosts each client;
- ``transport`` (:class:`~fedstale.strategies.transport.Transport`) and
  ``courier`` (:class:`~fedstale.strategies.courier.Courier`): messages out,
  replies in;
- ``dispatcher`` (:class:`~fedstale.strategies.dispatch.Dispatcher`): new
  tasks and their TRAIN messages;
- ``inflight`` (:class:`~fedstale.strategies.inflight.InFlight`): tasks
  between dispatch and delivery;
- ``global_model`` and ``snapshots`` (:mod:`fedstale.strategies.versions`):
  the model versions;
- ``ledger`` (:class:`~fedstale.strategies.ledger.Ledger`): totals and rows;
- ``evaluator`` (:class:`~fedstale.strategies.evaluator.Evaluator`);
- ``result``: Flower's :class:`~flwr.serverapp.strategy.Result`.

They are made anew for every run (:meth:`EventLoop._reset_run_state`). The
settings they are made from are :class:`AsyncStrategy`'s constructor
parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from flwr.supercore import log

from ..aggregation.vectors import ModelCodec
from ..progress import format_evaluation, log_line
from .batches import batch_rule
from .courier import Courier
from .dispatch import Dispatcher
from .evaluator import Evaluator
from .failfast import RunAborted
from .hooks import StrategyHooks
from .inflight import InFlight
from .ledger import Ledger
from .placement import Placement, discover
from .polling import Poll, poll_ceiling
from .pool import ClientPool
from .run_state import capture_run_state, restore_run_state
from .task import ClientUpdate, Task, too_stale
from .transport import Transport
from .updates import updates_of
from .versions import GlobalModel, SnapshotStore
from .wakeups import wake

STALE_STREAK = 10
"""With ``max_staleness_seconds``, the run stops after this many × C updates in a row were
dropped as too stale: no version is made, so every later update would be too."""


class EventLoop(StrategyHooks, Strategy):  # pylint: disable=too-many-instance-attributes
    """The steps of the event loop and the parts of the current run.

    See the module docstring for the parts; the settings are
    :class:`~fedstale.strategies.base.AsyncStrategy`'s.
    """

    @property
    def version(self) -> int:
        """The current model version (0 until the first change)."""
        return self.global_model.version

    @property
    def model(self) -> torch.Tensor:
        """The current global model as one flat float32 vector."""
        return self.global_model.flat

    @property
    def codec(self) -> ModelCodec:
        """The global model's layout (ArrayRecord ⇄ flat vector)."""
        return self.global_model.codec

    @property
    def stop_reason(self) -> str:
        """Why the last run stopped before its version budget ("" if it did not)."""
        return self._stop_reason

    def process(self, task: Task) -> bool:
        """Deliver one task's reply at ``clock.now``.

        A task lost because its client went offline is dropped; a failed
        task is counted and its client retried or left out; a too stale one
        is dropped; in sync mode a reply waits for the round's last; else it
        is merged (:meth:`aggregate_train`).

        Returns
        -------
        bool
            Whether the model version changed.
        """
        self.inflight.delivered(task)
        self.pool.task_ended(task.client_id)
        self.ledger.count_delivered(task, self.codec.nbytes)
        if task.lost is not None:  # its client went offline first
            self.ledger.dropped += 1
            self._drop(task, task.lost)
            return self._close_round_if_done()
        if task.failure is not None:
            self._on_failure(task)
            return self._close_round_if_done()
        self.fail_fast.on_success()
        staleness = self.version - task.dispatch_version
        self.pool.on_reply(task, staleness)
        age = self.clock.now - task.version_time
        reason = too_stale(staleness, age, self.max_staleness, self.max_staleness_seconds)
        if reason is not None:
            streak = self.ledger.count_too_stale()
            self._drop(task, reason)
            if self.max_staleness_seconds is not None and streak >= STALE_STREAK * self.concurrency:
                self._stop_reason = f"{streak} updates in a row {reason}"
            return False
        if self.mode == "sync":
            self.inflight.barrier.append(task)
            return self._close_round_if_done()
        return self._merge([task])

    def run_state(self) -> dict[str, Any]:
        """Everything needed to continue this run from the current version.

        Taken right after a new model version (and its evaluation); see
        :mod:`fedstale.strategies.run_state` for what it holds.
        """
        return capture_run_state(self)

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (a :meth:`run_state` of this experiment).

        Called by :meth:`start` after the clients were placed on this run's
        SuperNodes; the tasks that were in flight are queued again.
        """
        self.dispatcher.requeue(restore_run_state(self, state), self._train_config)

    def _reset_run_state(self) -> None:
        """Forget the last run; subclasses extend it with their own state."""
        self.selection.reset()
        self.pool = ClientPool(
            self.selection,
            max_retries=self.max_retries,
            retry_backoff=self.retry_backoff,
            max_participations=self.max_participations,
            retry=self.mode == "async",
            availability=self.availability,
        )
        self.placement = Placement([], self.num_clients or 0, self.message_ttl)
        self.transport = Transport([], self.max_inflight_per_node, None, math.inf)
        self.inflight, self.snapshots = InFlight(), SnapshotStore()
        self.ledger = Ledger(self.trust, self.adversary)
        self.evaluator = Evaluator(self.eval_every, self.num_evaluate_clients, targets=self.eval_targets)
        self.global_model, self.result = GlobalModel(ArrayRecord()), Result()
        self._stop_reason, self._abort = "", None
        self.fail_fast.reset()
        for component in (self.trust, self.adversary, self.central_dp):
            if component is not None:
                component.reset()
        self._wire()

    def _wire(self) -> None:
        """Connect the dispatcher and the courier to this run's parts."""
        self.dispatcher = Dispatcher(
            pool=self.pool,
            placement=self.placement,
            clock=self.clock,
            inflight=self.inflight,
            snapshots=self.snapshots,
            model=self.global_model,
            transport=self.transport,
            seed=self.seed,
            lr_delay_alpha=self.lr_delay_alpha,
            adversary=self.adversary,
            directives=self.task_directives,
        )
        timeout = self.transport.timeout
        self.courier = Courier(self.transport, self.clock, self.inflight, self.decode_update, timeout)

    # ------------------------------------------------------------------
    # Steps of the loop
    # ------------------------------------------------------------------

    def _begin(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None,
        resume: dict[str, Any] | None,
    ) -> None:
        """Start a run: place the clients, then evaluate version 0 or resume."""
        log(INFO, "Starting %s strategy:", type(self).__name__)
        self.summary()
        self._reset_run_state()
        self.evaluator.evaluate_fn, self._num_rounds_hint = evaluate_fn, num_rounds
        self.global_model = GlobalModel(initial_arrays)
        poll = Poll(self.poll_interval, poll_ceiling(grid, self.max_poll_interval))
        self.placement = discover(
            grid,
            num_clients=self.num_clients,
            train_config=self._train_config,
            timeout=self._timeout,
            ttl=self.message_ttl,
            poll=poll,
        )
        self.pool.populate(self.placement.num_clients)
        self.fail_fast.reset(self.placement.num_clients)
        window = self.push_window if self.push_window else self.clock.default_push_window
        rule = batch_rule(self.placement, self.tasks_per_message, self.batch_seconds, grid)
        self.transport = Transport.for_placement(
            self.placement, self.max_inflight_per_node, window, self._timeout, rule, poll
        )
        self._wire()
        self.clock.start()
        self.result = Result(arrays=initial_arrays)
        if resume is None:
            self._evaluate(grid)
        else:
            self.load_run_state(resume)

    def _end(self, grid: Grid) -> Result:
        """Finish a run: a last row if anything happened since the last one."""
        if not self.evaluator.is_current(self.version, self.ledger.updates):
            self._evaluate(grid)  # the final counts, even if the model did not change
        if self._abort is not None:
            log_line("stopped: %s", self._abort, warning=True)
            raise RunAborted(self._abort)
        log_line(
            "finished: %d versions, %d updates in %.1fs virtual / %.1fs wall (%s)",
            self.version,
            self.ledger.updates,
            self.clock.now,
            self.clock.wall_elapsed(),
            self._stop_reason or "version budget",
        )
        log_line(
            "transport: %d training tasks in %d messages, the first at Unix time %.3f; "
            "evaluation: %.2fs; memory: at most %d base models held at once",
            self.transport.tasks_pushed,
            self.transport.messages_pushed,
            self.transport.first_train_time or 0.0,
            self.evaluator.seconds,
            self.snapshots.peak,
        )
        self.result.arrays = self.codec.unflatten(self.model)
        return self.result

    def _should_stop(self, num_rounds: int, target_accuracy: float | None) -> bool:
        if self._stop_reason or self._abort is not None or self.version >= num_rounds:
            return True
        self._stop_reason = self.evaluator.target_reached(
            target_accuracy
        ) or self.pool.stop_reason(idle=not self.inflight)
        return bool(self._stop_reason)

    def _wake(self, grid: Grid, num_rounds: int, max_virtual_time: float | None) -> bool:
        """Handle the next event that is not a delivery if it comes first (:func:`~fedstale.strategies.wakeups.wake`)."""
        return wake(self, grid, num_rounds, max_virtual_time)  # type: ignore[arg-type]

    def _passes_budget(self, at: float | None, max_virtual_time: float | None) -> bool:
        """Whether an event at ``at`` (a delivery, a wake-up) comes after
        ``max_virtual_time``; if so the clock stops at the budget, and says why."""
        if max_virtual_time is None or at is None or at <= max_virtual_time:
            return False
        self.clock.now = max(self.clock.now, max_virtual_time)
        self._stop_reason = f"virtual-time budget {max_virtual_time:g}s"
        return True

    def _dispatch(self, grid: Grid) -> None:
        """Fill free slots with new tasks, queued for their nodes."""
        if self.inflight.free_slots(self.mode, self.concurrency) <= 0:
            return
        arrays = self.global_model.arrays()
        self.dispatcher.enqueue(self.configure_train(self.version, arrays, self._train_config, grid))

    def _updates_of(self, replies: Iterable[Message]) -> list[ClientUpdate]:
        """The intact replies' tasks as updates (:func:`~fedstale.strategies.updates.updates_of`)."""
        return updates_of(
            replies, inflight=self.inflight, courier=self.courier, snapshots=self.snapshots,
            version=self.version, now=self.clock.now, adversary=self.adversary,
        )

    def _on_failure(self, task: Task) -> None:
        self.ledger.failures += 1
        self._drop(task, task.failure or "")
        repeated = self.fail_fast.on_failure(task.client_id, task.failure or "", task.failure_repeats)
        if repeated is not None:
            self._abort = (
                f"{self.fail_fast.num_clients_failed} clients failed with the same error "
                f"before any reply succeeded (a bug or bad input, not a flaky client; "
                f"comm.fail_fast=0 retries them instead): {repeated}"
            )
        self.pool.on_failure(task.client_id, task.failure or "")

    def _drop(self, task: Task, reason: str) -> None:
        """A task that will not be aggregated: free its base model, log its row."""
        self.inflight.forget(task)
        self.snapshots.release(task.dispatch_version, self.version)
        self.on_task_dropped(task)
        self.recorder.on_update(self._row(task, None, accepted=False, reason=reason))

    def _close_round_if_done(self) -> bool:
        if self.mode != "sync" or self.inflight:
            return False
        tasks, self.inflight.barrier = self.inflight.barrier, []
        return self._merge(tasks) if tasks else False

    def _merge(self, tasks: list[Task]) -> bool:
        before = self.version
        self.aggregate_train(self.version, [t.reply for t in tasks])  # type: ignore[misc]
        return self.version != before

    def _row(
        self, task: Task, update: ClientUpdate | None, *, accepted: bool, reason: str
    ) -> dict[str, Any]:
        node = self.placement.node_index.get(task.node_id, -1)
        return self.ledger.client_row(
            task, update, version=self.version, now=self.clock.now, node=node,
            accepted=accepted, reason=reason,
        )

    def _after_new_version(self, grid: Grid, num_rounds: int) -> None:
        self.recorder.on_model(self.version, self.global_model.arrays)
        if self.evaluator.due(self.version, num_rounds):
            self._evaluate(grid)
        if self.supports_resume:
            self.recorder.on_resume_point(
                self.version, self.run_state, force=self.version >= num_rounds
            )

    def _evaluate(self, grid: Grid) -> None:
        row = self.ledger.metrics_row(
            version=self.version,
            now=self.clock.now,
            wall=self.clock.wall_elapsed(),
            central_epsilon=self.central_epsilon(),
        )
        self.evaluator.evaluate(
            row,
            updates=self.ledger.updates,
            arrays=self.global_model.arrays,
            federated=lambda: self._federated_evaluation(grid),
            result=self.result,
        )
        self.evaluator.report(row, self.recorder)
        log_line("%s", format_evaluation(row, self._num_rounds_hint))

    def _federated_evaluation(self, grid: Grid) -> MetricRecord | None:
        """Run EVALUATE on sampled clients; training events wait meanwhile."""
        arrays = self.global_model.arrays()
        messages = list(self.configure_evaluate(self.version, arrays, self._evaluate_config, grid))
        replies = self.evaluator.collect(messages, self.transport, lambda: self.courier.pump(grid), self._timeout)
        return self.aggregate_evaluate(self.version, replies)

