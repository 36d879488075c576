"""The asynchronous event loop shared by all fedstale strategies.

:class:`AsyncStrategy` overrides Flower's ``Strategy.start()``: instead of
rounds of ``send_and_receive``, it keeps ``concurrency`` clients busy with
``Grid.push_messages`` and merges each reply as it comes back through
``Grid.pull_messages``. Subclasses only say how updates change the model
(:meth:`AsyncStrategy.aggregate_updates`); the loop does the rest:

- **Clients.** The federation has ``num_clients`` clients (default: one per
  SuperNode). Each client lives on one SuperNode for the whole run (client
  ``c`` on the ``c mod N``-th node, nodes ordered by their ``partition-id``),
  so per-client state kept in the node's ``Context`` stays with its client. In
  simulation the SuperNodes are only workers, and 2 of them can host any
  population; in deployment each SuperNode is usually one client.
- **Time.** A :class:`~fedstale.simulation.Clock` decides the order in which
  replies are merged: virtual-finish order in simulation (deterministic for a
  seed, whatever the number of workers), arrival order in deployment.
- **Staleness** τ is counted in model versions: the server version when the
  reply is merged minus the version the client started from. Updates older
  than ``max_staleness`` are dropped.
- **Modes.** ``async`` refills a slot as soon as a reply is merged. ``sync``
  dispatches ``concurrency`` clients at once and merges when all have
  replied (a barrier), on the same clients, delays and data, so comparisons
  are like for like.
- **Faults.** Error replies, malformed updates and replies later than
  ``timeout`` wall seconds are counted as failures; in async mode the client
  is dispatched again, at once or after an exponential ``retry_backoff`` (up
  to ``max_retries`` consecutive failures, after which it is left out for
  the rest of the run). Every message carries a TTL.
- **Resume.** :meth:`AsyncStrategy.run_state` is handed to the recorder
  after new versions; :meth:`start` with ``resume=`` continues from one
  (see :mod:`fedstale.resume`).
- **Per node**, at most ``max_inflight_per_node`` messages are in flight (1 by
  default), because Flower's simulation engine runs two messages for one
  node against copies of the same ``Context`` and keeps only the last write
  (a deployment SuperNode runs a node's messages one after the other).
"""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from ..aggregation.compression import is_compressed, read_compressed
from ..aggregation.privacy import CentralGaussianMechanism
from ..aggregation.staleness import Polynomial, StalenessFunction
from ..aggregation.trust import TrustTracker, agreement_score, reference_statistics
from ..aggregation.vectors import ModelCodec, UpdateError
from ..progress import format_evaluation, log_line
from ..component_state import capture, restore
from ..simulation.clock import Clock, WallClock
from .failfast import DETERMINISTIC_ERROR_CODES, FailFast, RunAborted
from .task import ClientUpdate, Task
from .transport import Transport

if TYPE_CHECKING:
    from ..simulation.adversary import Adversary

ACTION_KEY = "fedstale-action"
"""ConfigRecord key of the start-up QUERY messages (``describe``/``prepare``)."""

_DISPATCH_FIELDS = (
    "task_id",
    "client_id",
    "index",
    "dispatch_version",
    "dispatch_time",
    "num_examples",
    "epochs",
    "min_epochs",
    "bytes_down",
    "lr",
    "seed",
)
"""What a task in flight needs to be dispatched again on resume."""

_COUNTERS = (
    "_updates",
    "_accepted",
    "_dropped",
    "_rejected",
    "_failures",
    "_bytes_up",
    "_bytes_down",
    "_dense_bytes_up",
    "_max_client_epsilon",
    "_since_eval",
    "_last_eval_version",
    "_last_eval_updates",
    "_last_accuracy",
)
"""Run totals behind metrics.csv, saved in a resume point."""

_CLIENT_BOOKS = (
    "_excluded",
    "_retry_first",
    "_consecutive_failures",
    "_last_staleness",
    "_task_index",
)
"""Per-client bookkeeping saved in a resume point."""

_RESULT_METRICS = (
    "train_metrics_clientapp",
    "evaluate_metrics_clientapp",
    "evaluate_metrics_serverapp",
)
"""The :class:`~flwr.serverapp.strategy.Result` dicts a resumed run continues."""


class Recorder(Protocol):
    """Receives what the loop observes; see :class:`fedstale.results.RunRecorder`."""

    def on_update(self, row: dict[str, Any]) -> None:
        """One received update (a row of ``clients.csv``)."""

    def on_evaluate(self, row: dict[str, Any]) -> None:
        """One evaluation (a row of ``metrics.csv``)."""

    def on_model(self, version: int, get_arrays: Callable[[], ArrayRecord]) -> None:
        """A new global model version."""

    def on_resume_point(
        self, version: int, get_state: Callable[[], dict[str, Any]], force: bool = False
    ) -> None:
        """A point the run could be resumed from (see :mod:`fedstale.resume`)."""


class NullRecorder:
    """A recorder that keeps nothing."""

    def on_update(self, row: dict[str, Any]) -> None:
        """Ignore the row."""

    def on_evaluate(self, row: dict[str, Any]) -> None:
        """Ignore the row."""

    def on_model(self, version: int, get_arrays: Callable[[], ArrayRecord]) -> None:
        """Ignore the model."""

    def on_resume_point(
        self, version: int, get_state: Callable[[], dict[str, Any]], force: bool = False
    ) -> None:
        """Ignore the resume point."""


class MemoryRecorder(NullRecorder):
    """A recorder that keeps the rows in lists (for tests and notebooks)."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.versions: list[int] = []

    def on_update(self, row: dict[str, Any]) -> None:
        """Keep the row."""
        self.updates.append(row)

    def on_evaluate(self, row: dict[str, Any]) -> None:
        """Keep the row."""
        self.evaluations.append(row)

    def on_model(self, version: int, get_arrays: Callable[[], ArrayRecord]) -> None:
        """Keep the version number."""
        self.versions.append(version)


@dataclass
class _EvalJob:
    """A federated-evaluation message waiting for its node or its reply."""

    message: Message
    node_id: int
    client_id: int
    message_id: str | None = None
    pushed_wall: float | None = None
    reply: Message | None = None
    done: bool = False
    earliest_finish: float = -math.inf
    task_id: int = -1


# pylint: disable=too-many-instance-attributes
class AsyncStrategy(Strategy):
    """Base class of asynchronous (and barrier-synchronous) strategies.

    Parameters
    ----------
    concurrency : int (default: 10)
        C, the number of clients training at any time (async) or per round
        (sync).
    num_clients : int | None (default: None)
        Size of the client population. None means one client per SuperNode.
    mode : str (default: "async")
        ``async`` or ``sync`` (barrier of ``concurrency`` clients).
    clock : Clock | None (default: None)
        Orders replies. None means :class:`~fedstale.simulation.WallClock`
        (arrival order, as in deployment).
    staleness : StalenessFunction | None (default: None)
        s(τ); None means FedBuff's 1/√(1 + τ) (``Polynomial(a=0.5)``).
    max_staleness : int | None (default: None)
        Drop updates with τ above this (Papaya's ``max_staleness``).
    lr_delay_alpha : float (default: 0.0)
        α_lr of the delay-aware client learning rate
        lr = γ0 / (1 + α_lr · τ_last), where γ0 is ``train_config["lr"]`` and
        τ_last the staleness of the client's previous update (0 before it
        has one). 0 keeps γ0.
    eval_every : int (default: 1)
        Evaluate every this many model versions (and at version 0 and at
        the end).
    num_evaluate_clients : int (default: 0)
        Clients asked for federated evaluation at each evaluation (0: only
        the centralized ``evaluate_fn``).
    max_retries : int (default: 2)
        Consecutive failures after which a client is left out.
    retry_backoff : tuple[float, float] (default: (0.0, 60.0))
        (b, b_max): after its k-th consecutive failure a client is
        dispatched again no sooner than min(b·2^(k−1), b_max) wall seconds
        later, so a SuperNode that is down (answered at once with "Node
        Unavailable") does not burn its clients' ``max_retries`` in a few
        milliseconds. b = 0: at once. Wall time: keep 0 in simulation,
        where it would make the selection depend on timing.
    message_ttl : float (default: 3600.0)
        Time-to-live of every message, in seconds.
    max_inflight_per_node : int (default: 1)
        Messages in flight per SuperNode at most.
    push_window : int | None (default: None)
        Messages in flight in all at most; None takes the clock's default
        (virtual clock: CPUs of this machine + 1, so the simulation engine
        trains the tasks that finish first; wall clock: no limit). See
        :mod:`fedstale.strategies.transport`.
    poll_interval : float (default: 0.005)
        Wall seconds between two pulls when nothing is ready.
    seed : int (default: 0)
        Seed of client selection and of the per-task training seeds.
    trust : TrustTracker | None (default: None)
        Scores clients and quarantines those below a threshold (see
        :mod:`fedstale.aggregation.trust`); each strategy multiplies its
        weights by the client's trust. None: every client counts fully.
    adversary : Adversary | None (default: None)
        Simulation only: the Byzantine clients, the attack directives in
        their TRAIN messages and the server-side omniscient attacks (see
        :mod:`fedstale.simulation.adversary`).
    central_dp : CentralGaussianMechanism | None (default: None)
        Server-side DP: each strategy clips the updates it aggregates and
        adds noise to each aggregate (see :mod:`fedstale.aggregation.privacy`);
        its ε is reported in ``metrics.csv``. None: no central DP.
    recorder : Recorder | None (default: None)
        Receives rows for ``clients.csv``/``metrics.csv`` and model versions.
    max_participations : int (default: 0)
        Tasks a client may be sent at most (its DP-SGD privacy budget,
        ``privacy.local.max_participations``); the run stops once every
        client has had them all. 0: unlimited.
    fail_fast : int (default: 3)
        Stop the run with :class:`~fedstale.strategies.failfast.RunAborted`
        when its first replies, from this many different clients (at most
        the population), all fail with the same ClientApp error or malformed
        update before any reply succeeds (see
        :mod:`fedstale.strategies.failfast`). 0: never; failing clients are
        then retried and left out as usual.
    """

    supported_modes: tuple[str, ...] = ("async", "sync")
    supports_resume: bool = True
    """Whether :meth:`run_state` captures everything a resumed run needs."""

    # pylint: disable=too-many-arguments,too-many-locals
    def __init__(
        self,
        *,
        concurrency: int = 10,
        num_clients: int | None = None,
        mode: str = "async",
        clock: Clock | None = None,
        staleness: StalenessFunction | None = None,
        max_staleness: int | None = None,
        lr_delay_alpha: float = 0.0,
        eval_every: int = 1,
        num_evaluate_clients: int = 0,
        max_retries: int = 2,
        retry_backoff: tuple[float, float] = (0.0, 60.0),
        message_ttl: float = 3600.0,
        max_inflight_per_node: int = 1,
        push_window: int | None = None,
        poll_interval: float = 0.005,
        seed: int = 0,
        trust: TrustTracker | None = None,
        adversary: Adversary | None = None,
        central_dp: CentralGaussianMechanism | None = None,
        recorder: Recorder | None = None,
        max_participations: int = 0,
        fail_fast: int = 3,
    ) -> None:
        if mode not in self.supported_modes:
            raise ValueError(
                f"{type(self).__name__} supports mode {' or '.join(self.supported_modes)}"
                f", got '{mode}'"
            )
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self.num_clients = num_clients
        self.mode = mode
        self.clock: Clock = clock if clock is not None else WallClock()
        self.staleness = staleness if staleness is not None else Polynomial(0.5)
        self.max_staleness = max_staleness
        self.lr_delay_alpha = lr_delay_alpha
        self.eval_every = max(1, eval_every)
        self.num_evaluate_clients = num_evaluate_clients
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.message_ttl = message_ttl
        self.max_inflight_per_node = max_inflight_per_node
        self.push_window = push_window
        self.poll_interval = poll_interval
        self.seed = seed
        self.trust = trust
        self.adversary = adversary
        self.central_dp = central_dp
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self.max_participations = max_participations
        self.fail_fast = FailFast(fail_fast)
        self._reset_run_state()

    # ------------------------------------------------------------------
    # What subclasses define
    # ------------------------------------------------------------------

    @abstractmethod
    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """Merge ``updates`` into ``model`` (flat vectors).

        Called with one update at a time in async mode and with a whole
        round in sync mode. Set each ``update.weight`` to the weight used.

        Returns
        -------
        torch.Tensor | None
            The new global model (a new model version), or None if the model
            does not change yet (e.g. FedBuff's buffer is not full).
        """

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> Mode: %s, concurrency C=%d", self.mode, self.concurrency)
        log(INFO, "\t├──> Clients: %s", self.num_clients or "one per SuperNode")
        log(INFO, "\t├──> Staleness: %s", self.staleness.describe())
        log(
            INFO,
            "\t├──> max_staleness: %s",
            "none" if self.max_staleness is None else self.max_staleness,
        )
        if self.central_dp is not None:
            log(INFO, "\t├──> Privacy: %s", self.central_dp.describe())
        log(INFO, "\t└──> Clock: %s", self.clock.name)

    # ------------------------------------------------------------------
    # Flower's Strategy interface
    # ------------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Select clients for the free slots and build their TRAIN messages.

        ``server_round`` is the current model version. Each message carries
        ``arrays`` and ``config`` plus the task's ``client-id``,
        ``num-clients``, ``task-id``, ``seed`` and delay-aware ``lr``.
        """
        messages = []
        for client_id in self._select_clients(self._free_slots()):
            task = self._new_task(client_id, server_round, config)
            messages.append(self._train_message(task, arrays, config))
        return messages

    def _train_message(self, task: Task, arrays: ArrayRecord, config: ConfigRecord) -> Message:
        """The TRAIN message of ``task`` (kept on the task)."""
        task.message = self._client_message(
            task.client_id,
            MessageType.TRAIN,
            arrays,
            config,
            task.dispatch_version,
            {"task-id": task.task_id, "seed": task.seed}
            | ({} if task.lr is None else {"lr": task.lr})
            | (self.adversary.task_config(task.client_id) if self.adversary else {})
            | self.task_directives(task),
        )
        return task.message

    def task_directives(self, task: Task) -> dict[str, Any]:
        """Extra TRAIN-config entries for one task (none by default).

        Strategies whose clients need per-task instructions (secure
        aggregation's group and slot) override this.
        """
        del task
        return {}

    def _client_message(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        client_id: int,
        message_type: str,
        arrays: ArrayRecord,
        config: ConfigRecord,
        version: int,
        extra: dict[str, Any] | None = None,
    ) -> Message:
        """A message to client ``client_id`` on its SuperNode, with a TTL."""
        content = ConfigRecord(dict(config))
        content.update(
            {
                "client-id": client_id,
                "num-clients": self._num_clients,
                "server-round": version,
                **(extra or {}),
            }
        )
        return Message(
            RecordDict({"arrays": arrays, "config": content}),
            dst_node_id=self._placement[client_id],
            message_type=message_type,
            ttl=self.message_ttl,
            group_id=str(version),
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Merge replies to this strategy's TRAIN messages into the model.

        Each reply is matched to its task, turned into a
        :class:`~fedstale.strategies.task.ClientUpdate` (with its staleness
        and base model) and handed to :meth:`aggregate_updates`. When that
        returns a new model, the model version increases by one.

        Returns
        -------
        tuple[ArrayRecord | None, MetricRecord | None]
            The new global model (None if the model did not change) and the
            merged updates' metrics (mean ``train-loss``, ``mean-staleness``).
        """
        updates = []
        for reply in replies:
            task = self._task_of_message.pop(reply.metadata.reply_to_message_id, None)
            if task is None:
                log_line("ignoring a reply to an unknown message", warning=True)
                continue
            if not task.arrived:
                self._receive(task, reply)
            if task.failure is None:
                update = self._to_update(task)
                if self.adversary is not None:
                    self.adversary.intercept(update)
                updates.append(update)
            self._release(task)
        if not updates:
            return None, None
        trust_before = {u.task.client_id: self._trust_of(u.task.client_id) for u in updates}
        new_model = self.aggregate_updates(self._model, updates)
        for update in updates:
            if update.accepted:
                self._accepted += 1
                self._since_eval.append(update.staleness)
            else:
                self._rejected += 1
            self._record(
                update,
                accepted=update.accepted,
                reason=update.reason,
                trust=trust_before[update.task.client_id],
            )
        metrics = self._train_metrics(updates)
        if new_model is None:
            return None, metrics
        self._model = new_model
        self._version += 1
        self._drop_unused_snapshots()
        self._arrays = self._codec.unflatten(new_model)
        self._arrays_version = self._version
        self._result.train_metrics_clientapp[self._version] = metrics
        return self._arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Build EVALUATE messages for ``num_evaluate_clients`` sampled clients."""
        available = sorted(self._clients - self._excluded)
        count = min(self.num_evaluate_clients, len(available))
        if count <= 0:
            return []
        rng = np.random.default_rng([self.seed, 3, server_round])
        chosen = sorted(int(c) for c in rng.choice(available, size=count, replace=False))
        return [
            self._client_message(c, MessageType.EVALUATE, arrays, config, server_round)
            for c in chosen
        ]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Average the clients' evaluation metrics, weighted by ``num-examples``."""
        contents = [r.content for r in replies if r.has_content()]
        if not contents:
            return None
        return aggregate_metricrecords(contents, "num-examples")

    # ------------------------------------------------------------------
    # The event loop
    # ------------------------------------------------------------------

    # pylint: disable=too-many-arguments,too-many-positional-arguments
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 100,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        *,
        max_virtual_time: float | None = None,
        target_accuracy: float | None = None,
        resume: dict[str, Any] | None = None,
    ) -> Result:
        """Run the federation until a stop condition holds.

        Parameters
        ----------
        grid : Grid
            The Grid of the ServerApp.
        initial_arrays : ArrayRecord
            The initial global model.
        num_rounds : int (default: 100)
            Number of server model versions (global model updates) to make.
            In sync mode a version is a round; in FedAsync an update; in
            FedBuff a buffer flush.
        timeout : float (default: 3600)
            Wall seconds to wait for one reply before counting it failed.
        train_config : ConfigRecord | None
            Sent to clients with every TRAIN message. ``lr``,
            ``local-epochs`` and ``patience`` are read by the loop too.
        evaluate_config : ConfigRecord | None
            Sent with every EVALUATE message.
        evaluate_fn : Callable[[int, ArrayRecord], MetricRecord | None] | None
            Centralized evaluation ``(version, arrays) -> MetricRecord``;
            ``accuracy`` in it feeds ``target_accuracy``.
        max_virtual_time : float | None
            Stop before delivering a reply that finishes after this time.
        target_accuracy : float | None
            Stop at the first evaluation with ``accuracy`` ≥ this.
        resume : dict[str, Any] | None
            A :meth:`run_state` of an earlier run of this experiment to
            continue from (see :mod:`fedstale.resume`); ``initial_arrays``
            then only gives the model's layout.

        Returns
        -------
        Result
            Final arrays and metrics keyed by model version.
        """
        log(INFO, "Starting %s strategy:", type(self).__name__)
        self.summary()
        self._reset_run_state()
        self._timeout = timeout
        self._train_config = ConfigRecord() if train_config is None else train_config
        self._evaluate_config = (
            ConfigRecord() if evaluate_config is None else evaluate_config
        )
        self._evaluate_fn = evaluate_fn
        self._num_rounds_hint = num_rounds
        self._codec = ModelCodec(initial_arrays)
        self._model = self._codec.flatten(initial_arrays)
        self._discover(grid)
        self.clock.start()
        result = Result(arrays=initial_arrays)
        self._result = result
        if resume is None:
            self._evaluate(grid)
        else:
            self.load_run_state(resume)
        while not self._should_stop(num_rounds, target_accuracy):
            self._dispatch(grid)
            self._pump(grid)
            task = self.clock.next_due(self._inflight.values())
            if task is None:
                if not self._inflight and not self._backing_off():
                    log_line("no client left to train; stopping", warning=True)
                    break
                time.sleep(self.poll_interval)
                continue
            if (
                max_virtual_time is not None
                and task.finish_time is not None
                and task.finish_time > max_virtual_time
            ):
                self.clock.now = max(self.clock.now, max_virtual_time)
                self._stop_reason = f"virtual-time budget {max_virtual_time:g}s"
                break
            self.clock.advance(task)
            if self._process(task):
                self._after_new_version(grid, num_rounds)
                if self.supports_resume:
                    self.recorder.on_resume_point(
                        self._version, self.run_state, force=self._version >= num_rounds
                    )
        if self._last_eval_version != self._version or self._last_eval_updates != self._updates:
            # a last row with the final counts, even when the model did not
            # change since the previous one (e.g. every client failed)
            self._evaluate(grid)
        if self._abort is not None:
            log_line("stopped: %s", self._abort, warning=True)
            raise RunAborted(self._abort)
        log_line(
            "finished: %d versions, %d updates in %.1fs virtual / %.1fs wall (%s)",
            self._version,
            self._updates,
            self.clock.now,
            self.clock.wall_elapsed(),
            self._stop_reason or "version budget",
        )
        result.arrays = self._codec.unflatten(self._model)
        return result

    # ------------------------------------------------------------------
    # Run state
    # ------------------------------------------------------------------

    def _reset_run_state(self) -> None:
        self._version = 0
        self._inflight: dict[int, Task] = {}
        self._task_of_message: dict[str, Task] = {}
        self._transport = Transport([], self.max_inflight_per_node, None, math.inf)
        self._placement: dict[int, int] = {}
        self._node_index: dict[int, int] = {}
        self._num_examples: dict[int, int] = {}
        self._clients: set[int] = set()
        self._busy: set[int] = set()
        self._excluded: set[int] = set()
        self._retry_first: list[int] = []
        self._retry_at: dict[int, float] = {}
        self._consecutive_failures: dict[int, int] = {}
        self._last_staleness: dict[int, int] = {}
        self._task_index: dict[int, int] = {}
        self._snapshots: dict[int, list[Any]] = {}
        self._round: list[Task] = []
        self._next_task_id = 0
        self._updates = 0
        self._accepted = 0
        self._dropped = 0
        self._rejected = 0
        self._failures = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._dense_bytes_up = 0
        self._max_client_epsilon: float | None = None
        self._since_eval: list[int] = []
        self._last_eval_version = -1
        self._last_eval_updates = -1
        self._last_accuracy: float | None = None
        self._stop_reason = ""
        self._abort: str | None = None
        self.fail_fast.reset()
        self._rng = np.random.default_rng([self.seed, 4])
        if self.trust is not None:
            self.trust.reset()
        if self.adversary is not None:
            self.adversary.reset()
        if self.central_dp is not None:
            self.central_dp.reset()
        self._arrays = ArrayRecord()
        self._arrays_version = -1
        self._num_clients = self.num_clients or 0

    # ------------------------------------------------------------------
    # Resume (see fedstale.resume)
    # ------------------------------------------------------------------

    def run_state(self) -> dict[str, Any]:
        """Everything needed to continue this run from the current version.

        Taken right after a new model version (and its evaluation): the
        model, counters, RNG, clock, per-client bookkeeping, the tasks in
        flight with the models they started from, and the state of trust,
        the adversary, central DP and the subclass (:meth:`extra_run_state`).
        """
        inflight = sorted(self._inflight.values(), key=lambda t: t.task_id)
        bases = {t.dispatch_version for t in inflight}
        return {
            "strategy": type(self).__name__,
            "version": self._version,
            "model": self._model,
            "bases": {v: self._snapshots[v][0] for v in sorted(bases)},
            "inflight": [{f: getattr(t, f) for f in _DISPATCH_FIELDS} for t in inflight],
            "next_task_id": self._next_task_id,
            "rng": self._rng.bit_generator.state,
            "clock": {"now": self.clock.now, "wall": self.clock.wall_elapsed()},
            "counters": {name: copy.deepcopy(getattr(self, name)) for name in _COUNTERS},
            "clients": {name: copy.deepcopy(getattr(self, name)) for name in _CLIENT_BOOKS},
            "components": {
                "trust": capture(self.trust),
                "adversary": capture(self.adversary),
                "central_dp": capture(self.central_dp),
            },
            "result": {
                name: {v: dict(m) for v, m in getattr(self._result, name).items()}
                for name in _RESULT_METRICS
            },
            "extra": self.extra_run_state(),
        }

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (a :meth:`run_state` of this experiment).

        Called by :meth:`start` after the clients were placed on this run's
        SuperNodes; the tasks that were in flight are queued again.
        """
        if state["strategy"] != type(self).__name__:
            raise ValueError(
                f"the resume point was written by {state['strategy']}, not {type(self).__name__}"
            )
        self._version = int(state["version"])
        self._model = state["model"]
        self._snapshots = {v: [m, 0] for v, m in state["bases"].items()}
        self._snapshots.setdefault(self._version, [self._model, 0])
        self._next_task_id = int(state["next_task_id"])
        self._rng.bit_generator.state = state["rng"]
        self.clock.resume(state["clock"]["now"], state["clock"]["wall"])
        for name, value in state["counters"].items():
            setattr(self, name, value)
        for name, value in state["clients"].items():
            setattr(self, name, copy.deepcopy(value))
        restore(self.trust, state["components"]["trust"])
        restore(self.adversary, state["components"]["adversary"])
        restore(self.central_dp, state["components"]["central_dp"])
        for name, metrics in state["result"].items():
            getattr(self._result, name).update(
                {int(v): MetricRecord(m) for v, m in metrics.items()}
            )
        self.load_extra_run_state(state["extra"])
        self._requeue(state["inflight"])

    def extra_run_state(self) -> dict[str, Any]:
        """A subclass's own run state (server momentum, filters, ...)."""
        return {}

    def load_extra_run_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`extra_run_state` returned."""
        del state

    def _requeue(self, tasks: list[dict[str, Any]]) -> None:
        """Dispatch again the tasks in flight at the resume point, as they were."""
        for fields in tasks:
            task = Task(node_id=self._placement[fields["client_id"]], **fields)
            self.clock.schedule(task)
            self._inflight[task.task_id] = task
            self._busy.add(task.client_id)
            snapshot = self._snapshots[task.dispatch_version]
            snapshot[1] += 1
            arrays = self._codec.unflatten(snapshot[0])
            self._train_message(task, arrays, self._train_config)
            self._transport.enqueue(task)

    # ------------------------------------------------------------------
    # Start-up: which clients live on which node
    # ------------------------------------------------------------------

    def _discover(self, grid: Grid) -> None:
        """Place clients on nodes and learn their training-set sizes."""
        node_ids = self._wait_for_nodes(grid)
        described = self._query(
            grid, {n: ConfigRecord({ACTION_KEY: "describe"}) for n in node_ids}
        )

        def order(node_id: int) -> tuple[float, int]:
            reply = described.get(node_id)
            if reply is not None and "partition-id" in reply:
                return (float(reply["partition-id"]), node_id)  # type: ignore[arg-type]
            return (math.inf, node_id)

        nodes = sorted(node_ids, key=order)
        self._node_index = {node: i for i, node in enumerate(nodes)}
        self._num_clients = self.num_clients or len(nodes)
        self._clients = set(range(self._num_clients))
        self.fail_fast.reset(self._num_clients)
        self._placement = {c: nodes[c % len(nodes)] for c in self._clients}
        window = self.push_window if self.push_window else self.clock.default_push_window
        self._transport = Transport(nodes, self.max_inflight_per_node, window, self._timeout)
        prepare = {}
        for node in nodes:
            content = ConfigRecord(dict(self._train_config))
            content[ACTION_KEY] = "prepare"
            content["client-ids"] = [c for c in sorted(self._clients) if self._placement[c] == node]
            content["num-clients"] = self._num_clients
            prepare[node] = content
        for reply in self._query(grid, prepare).values():
            ids = reply.get("client-ids", [])
            sizes = reply.get("num-examples", [])
            for client_id, size in zip(ids, sizes):  # type: ignore[arg-type]
                self._num_examples[int(client_id)] = int(size)
        log_line(
            "%d clients on %d SuperNodes; training-set sizes known for %d",
            self._num_clients,
            len(nodes),
            len(self._num_examples),
        )

    def _wait_for_nodes(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + self._timeout
        while True:
            node_ids = sorted(grid.get_node_ids())
            if node_ids:
                return node_ids
            if time.monotonic() > deadline:
                raise RuntimeError("no SuperNode connected within the timeout")
            time.sleep(0.5)

    def _query(
        self, grid: Grid, contents: dict[int, ConfigRecord]
    ) -> dict[int, ConfigRecord]:
        """Send one QUERY per node; return the ConfigRecord of each reply.

        A node whose ClientApp does not answer fedstale's queries (an error
        reply) is simply absent from the result.
        """
        messages = [
            Message(
                RecordDict({"config": content}),
                dst_node_id=node,
                message_type=MessageType.QUERY,
                ttl=self.message_ttl,
            )
            for node, content in contents.items()
        ]
        ids = [i for i in grid.push_messages(messages) if i]
        node_of = dict(zip(ids, contents))
        pending = set(ids)
        answers: dict[int, ConfigRecord] = {}
        deadline = time.monotonic() + self._timeout
        while pending and time.monotonic() < deadline:
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                node = node_of[reply.metadata.reply_to_message_id]
                if reply.has_content() and "config" in reply.content:
                    answers[node] = reply.content["config"]
            if pending:
                time.sleep(self.poll_interval)
        return answers

    # ------------------------------------------------------------------
    # Dispatch
    # ------------------------------------------------------------------

    def _free_slots(self) -> int:
        if self.mode == "sync":
            return 0 if self._inflight else self.concurrency
        return self.concurrency - len(self._inflight)

    def _budget_spent(self) -> set[int]:
        """Clients sent ``max_participations`` tasks already (none when unlimited).

        Every dispatched task counts, failed ones too: the client may have
        trained (and spent privacy) before its reply was lost.
        """
        if self.max_participations <= 0:
            return set()
        return {c for c, n in self._task_index.items() if n >= self.max_participations}

    def _select_clients(self, count: int) -> list[int]:
        """Pick ``count`` idle clients: clients to retry first, then at random."""
        chosen: list[int] = []
        spent = self._budget_spent()
        waiting = self._backing_off()
        for client in [c for c in self._retry_first if c not in waiting]:
            if len(chosen) == count:
                break
            self._retry_first.remove(client)
            if client not in self._busy and client not in self._excluded | spent:
                chosen.append(client)
        idle = sorted(
            self._clients - self._busy - self._excluded - spent - set(chosen) - waiting
        )
        extra = min(count - len(chosen), len(idle))
        if extra > 0:
            chosen += [int(c) for c in self._rng.choice(idle, size=extra, replace=False)]
        return chosen

    def _backing_off(self) -> set[int]:
        """Failed clients whose retry backoff has not elapsed yet."""
        now = time.monotonic()
        for client in [c for c, at in self._retry_at.items() if at <= now]:
            del self._retry_at[client]
        return set(self._retry_at)

    def _new_task(self, client_id: int, version: int, config: ConfigRecord) -> Task:
        index = self._task_index.get(client_id, 0)
        self._task_index[client_id] = index + 1
        epochs = float(config.get("local-epochs", 1))  # type: ignore[arg-type]
        patience = int(config.get("patience", 0))  # type: ignore[arg-type]
        min_epochs = epochs if patience <= 0 else min(epochs, patience + 1.0)
        lr = None
        if "lr" in config:  # γ0 / (1 + α_lr · τ_last); no lr in the config, none sent
            base_lr = float(config["lr"])  # type: ignore[arg-type]
            lr = base_lr / (1.0 + self.lr_delay_alpha * self._last_staleness.get(client_id, 0))
        seed = int(np.random.SeedSequence([self.seed, 5, client_id, index]).generate_state(1)[0])
        task = Task(
            task_id=self._next_task_id,
            client_id=client_id,
            node_id=self._placement[client_id],
            index=index,
            dispatch_version=version,
            dispatch_time=self.clock.now,
            num_examples=self._num_examples.get(client_id),
            epochs=epochs,
            min_epochs=min_epochs,
            bytes_down=self._codec.nbytes,
            lr=lr,
            seed=seed,
        )
        self._next_task_id += 1
        self.clock.schedule(task)
        self._inflight[task.task_id] = task
        self._busy.add(client_id)
        snapshot = self._snapshots.setdefault(version, [self._model, 0])
        snapshot[1] += 1
        return task

    def _dispatch(self, grid: Grid) -> None:
        """Fill free slots with new tasks, queued for their nodes."""
        if self._free_slots() <= 0:
            return
        arrays = self._current_arrays()
        for message in self.configure_train(self._version, arrays, self._train_config, grid):
            task = self._inflight[int(message.content["config"]["task-id"])]  # type: ignore[arg-type]
            self._transport.enqueue(task)

    def _current_arrays(self) -> ArrayRecord:
        if self._arrays_version != self._version:
            self._arrays = self._codec.unflatten(self._model)
            self._arrays_version = self._version
        return self._arrays

    # ------------------------------------------------------------------
    # Transport: push queued messages, pull replies, time out
    # ------------------------------------------------------------------

    def _pump(self, grid: Grid) -> None:
        for job in self._transport.expire():
            self._fail(job, f"no reply within {self._timeout:g}s")  # type: ignore[arg-type]
        for job in self._transport.push(grid):
            self._fail(job, "message could not be pushed")  # type: ignore[arg-type]
        for job, reply in self._transport.pull(grid):
            if isinstance(job, Task):
                self._task_of_message[reply.metadata.reply_to_message_id] = job
                self._receive(job, reply)
            else:
                job.reply, job.done = reply, True  # type: ignore[attr-defined]

    def _fail(self, job: Task | _EvalJob, reason: str) -> None:
        if isinstance(job, _EvalJob):
            job.done = True
            return
        job.failure = reason
        job.arrived_wall = time.monotonic()
        self.clock.fail(job)

    def _receive(self, task: Task, reply: Message) -> None:
        """Record an arrived reply: validate it and give it its finish time."""
        task.reply = reply
        task.arrived_wall = time.monotonic()
        if reply.has_error():
            task.failure_repeats = reply.error.code in DETERMINISTIC_ERROR_CODES
            self._fail(task, f"error reply ({reply.error.code}): {reply.error.reason}")
            return
        try:
            arrays = _single_record(reply.content.array_records, "ArrayRecord")
            metrics = _single_record(reply.content.metric_records, "MetricRecord")
            if "num-examples" not in metrics:
                raise UpdateError("MetricRecord has no 'num-examples'")
            task.params = self.decode_update(task, arrays)
        except UpdateError as err:
            task.failure_repeats = True
            self._fail(task, f"malformed update: {err}")
            return
        task.metrics = dict(metrics)
        task.bytes_up = sum(len(a.data) for a in arrays.values())
        self.clock.complete(
            task,
            num_examples=int(metrics["num-examples"]),  # type: ignore[arg-type]
            epochs=float(metrics.get("epochs-run", task.epochs)),  # type: ignore[arg-type]
            bytes_up=task.bytes_up,
        )

    def decode_update(self, task: Task, arrays: ArrayRecord) -> torch.Tensor:
        """The client's model x_local (flat) from its reply's ArrayRecord.

        A dense reply is read with the global model's layout
        (:meth:`ModelCodec.flatten`). A compressed one
        (:mod:`fedstale.aggregation.compression`, recognised by its
        ``fedstale.delta.*`` keys) carries Δ̂ only: x_local = x_base + Δ̂,
        where x_base is the model the task was dispatched with. Strategies
        whose clients encode their updates otherwise (secure aggregation)
        override it.

        Raises
        ------
        UpdateError
            If the arrays do not decode to a finite model; for a compressed
            reply, naming the offending key.
        """
        if is_compressed(arrays):
            delta = read_compressed(arrays, self._codec.num_parameters)
            local = self._snapshots[task.dispatch_version][0] + delta
            if not bool(torch.isfinite(local).all()):
                raise UpdateError("update contains NaN or infinite values")
            return local
        return self._codec.flatten(arrays)

    # ------------------------------------------------------------------
    # Delivering replies
    # ------------------------------------------------------------------

    def _to_update(self, task: Task) -> ClientUpdate:
        assert task.params is not None
        return ClientUpdate(
            task=task,
            params=task.params,
            base=self._snapshots[task.dispatch_version][0],
            staleness=self._version - task.dispatch_version,
            num_examples=int(task.metrics["num-examples"]),
        )

    def _process(self, task: Task) -> bool:
        """Deliver one task's reply at ``clock.now``; True if the version changed."""
        del self._inflight[task.task_id]
        self._busy.discard(task.client_id)
        self._updates += 1
        self._count_traffic(task)
        if task.failure is not None:
            self._on_failure(task)
            return self._close_round_if_done()
        self.fail_fast.on_success()
        self._consecutive_failures[task.client_id] = 0
        staleness = self._version - task.dispatch_version
        self._last_staleness[task.client_id] = staleness
        if self.max_staleness is not None and staleness > self.max_staleness:
            self._dropped += 1
            self._task_of_message.pop(task.message_id or "", None)
            self._release(task)
            self.on_task_dropped(task)
            self.recorder.on_update(
                self._row(task, None, accepted=False, reason=f"staleness > {self.max_staleness}")
            )
            return False
        if self.mode == "sync":
            self._round.append(task)
            return self._close_round_if_done()
        return self._merge([task])

    def _count_traffic(self, task: Task) -> None:
        """Add a delivered task's bytes (and its client's ε) to the run's totals."""
        self._bytes_down += task.bytes_down
        if task.bytes_up:
            self._bytes_up += task.bytes_up
            self._dense_bytes_up += self._codec.nbytes
        epsilon = task.metrics.get("dp-epsilon")
        if epsilon is not None:
            self._max_client_epsilon = max(self._max_client_epsilon or 0.0, float(epsilon))

    def central_epsilon(self) -> float | None:
        """ε spent by server-side (central) DP so far; None without it."""
        return None if self.central_dp is None else self.central_dp.epsilon()

    def on_task_dropped(self, task: Task) -> None:
        """A task that will not be aggregated (failed or too stale).

        Strategies that group tasks (secure aggregation) override this.
        """

    def _close_round_if_done(self) -> bool:
        if self.mode != "sync" or self._inflight:
            return False
        tasks, self._round = self._round, []
        return self._merge(tasks) if tasks else False

    def _merge(self, tasks: list[Task]) -> bool:
        before = self._version
        self.aggregate_train(self._version, [t.reply for t in tasks])  # type: ignore[misc]
        return self._version != before

    # ------------------------------------------------------------------
    # Trust (used by the strategies' aggregate_updates)
    # ------------------------------------------------------------------

    def _set_aside_quarantined(
        self, updates: list[ClientUpdate]
    ) -> tuple[list[ClientUpdate], list[ClientUpdate]]:
        """Split updates into (merged, quarantined); the latter are rejected."""
        if self.trust is None:
            return list(updates), []
        active, held = [], []
        for update in updates:
            client = update.task.client_id
            if self.trust.is_quarantined(client):
                update.reject(f"quarantined (trust {self.trust.trust(client):.3f})")
                held.append(update)
            else:
                active.append(update)
        return active, held

    def _trust_weight(self, update: ClientUpdate) -> float:
        """The client's trust (0 in quarantine; 1 when trust is off)."""
        return 1.0 if self.trust is None else self.trust.weight(update.task.client_id)

    def _score(self, updates: Iterable[ClientUpdate], reference_deltas: torch.Tensor) -> None:
        """Fold each update's agreement with the reference set into its client's trust.

        r, ν and c̃ come from ``reference_deltas`` [m, d]
        (:func:`fedstale.aggregation.trust.reference_statistics`).
        """
        if self.trust is None:
            return
        reference, typical_norm, typical_cosine = reference_statistics(reference_deltas)
        for update in updates:
            score = agreement_score(update.delta, reference, typical_norm, typical_cosine)
            self.trust.observe(update.task.client_id, score)

    def _release(self, task: Task) -> None:
        snapshot = self._snapshots.get(task.dispatch_version)
        if snapshot is not None:
            snapshot[1] -= 1
        self._drop_unused_snapshots()

    def _drop_unused_snapshots(self) -> None:
        for version in [v for v, (_, refs) in self._snapshots.items() if refs <= 0]:
            if version != self._version:
                del self._snapshots[version]

    def _on_failure(self, task: Task) -> None:
        self._failures += 1
        self._task_of_message.pop(task.message_id or "", None)
        self._release(task)
        self.on_task_dropped(task)
        self.recorder.on_update(self._row(task, None, accepted=False, reason=task.failure or ""))
        repeated = self.fail_fast.on_failure(
            task.client_id, task.failure or "", task.failure_repeats
        )
        if repeated is not None:
            self._abort = (
                f"{self.fail_fast.num_clients_failed} clients failed with the same error "
                f"before any reply succeeded (a bug or bad input, not a flaky client; "
                f"comm.fail_fast=0 retries them instead): {repeated}"
            )
        count = self._consecutive_failures.get(task.client_id, 0) + 1
        self._consecutive_failures[task.client_id] = count
        if count > self.max_retries:
            self._excluded.add(task.client_id)
            log_line(
                "client %d left out after %d consecutive failures: %s",
                task.client_id,
                count,
                task.failure,
                warning=True,
            )
        elif self.mode == "async":
            self._retry_first.append(task.client_id)
            base, longest = self.retry_backoff
            if base > 0:
                wait = min(base * 2 ** (count - 1), longest)
                self._retry_at[task.client_id] = time.monotonic() + wait

    def _trust_of(self, client_id: int) -> float | str:
        return "" if self.trust is None else self.trust.trust(client_id)

    def _record(
        self, update: ClientUpdate, *, accepted: bool, reason: str, trust: float | str = ""
    ) -> None:
        row = self._row(update.task, update, accepted=accepted, reason=reason)
        row["trust"] = trust
        self.recorder.on_update(row)

    def _row(
        self, task: Task, update: ClientUpdate | None, *, accepted: bool, reason: str
    ) -> dict[str, Any]:
        finish = task.finish_time if task.finish_time is not None else self.clock.now
        train_loss = task.metrics.get("train-loss", "")
        return {
            "task_id": task.task_id,
            "client_id": task.client_id,
            "node": self._node_index.get(task.node_id, -1),
            "dispatch_version": task.dispatch_version,
            "arrival_version": self._version,
            "staleness": self._version - task.dispatch_version,
            "weight": "" if update is None else update.weight,
            "dispatch_time": task.dispatch_time,
            "arrival_time": finish,
            "virtual_duration": finish - task.dispatch_time,
            "wall_duration": task.wall_duration,
            "fit_seconds": task.metrics.get("fit-seconds", ""),
            "num_examples": task.metrics.get("num-examples", task.num_examples or 0),
            "epochs": task.metrics.get("epochs-run", ""),
            "lr": "" if task.lr is None else task.lr,
            "train_loss": train_loss,
            "accepted": accepted,
            "reason": reason,
            "trust": self._trust_of(task.client_id),
            "quarantined": "" if self.trust is None else self.trust.is_quarantined(task.client_id),
            "malicious": "" if self.adversary is None else self.adversary.is_malicious(task.client_id),
            "epsilon": task.metrics.get("dp-epsilon", ""),
            "bytes_up": task.bytes_up,
            "bytes_down": task.bytes_down,
        }

    def _train_metrics(self, updates: list[ClientUpdate]) -> MetricRecord:
        losses = [u.task.metrics.get("train-loss") for u in updates]
        known = [float(x) for x in losses if x is not None]  # type: ignore[arg-type]
        record = MetricRecord(
            {
                "num-updates": len(updates),
                "mean-staleness": float(np.mean([u.staleness for u in updates])),
            }
        )
        if known:
            record["train-loss"] = float(np.mean(known))
        return record

    # ------------------------------------------------------------------
    # Evaluation and stopping
    # ------------------------------------------------------------------

    def _after_new_version(self, grid: Grid, num_rounds: int) -> None:
        self.recorder.on_model(self._version, self._current_arrays)
        if self._version % self.eval_every == 0 or self._version >= num_rounds:
            self._evaluate(grid)

    def _evaluate(self, grid: Grid) -> None:
        version = self._version
        row: dict[str, Any] = {
            "version": version,
            "virtual_time": self.clock.now,
            "wall_time": self.clock.wall_elapsed(),
            "updates": self._updates,
            "accepted": self._accepted,
            "dropped": self._dropped,
            "rejected": self._rejected,
            "failures": self._failures,
            "quarantined": "" if self.trust is None else len(self.trust.quarantined),
            "mean_staleness": float(np.mean(self._since_eval)) if self._since_eval else "",
            "accuracy": "",
            "loss": "",
            "fed_accuracy": "",
            "fed_loss": "",
            "attack_success": "",
            "max_client_epsilon": _blank(self._max_client_epsilon),
            "central_epsilon": _blank(self.central_epsilon()),
            "bytes_up": self._bytes_up,
            "bytes_down": self._bytes_down,
            "compression_ratio": (
                self._dense_bytes_up / self._bytes_up if self._bytes_up else ""
            ),
        }
        self._since_eval = []
        if self._evaluate_fn is not None:
            metrics = self._evaluate_fn(version, self._current_arrays())
            if metrics is not None:
                self._result.evaluate_metrics_serverapp[version] = metrics
                row["accuracy"] = metrics.get("accuracy", "")
                row["loss"] = metrics.get("loss", "")
                row["attack_success"] = metrics.get("attack-success", "")
                if "accuracy" in metrics:
                    self._last_accuracy = float(metrics["accuracy"])  # type: ignore[arg-type]
        if self.num_evaluate_clients > 0:
            fed = self._federated_evaluation(grid)
            if fed is not None:
                self._result.evaluate_metrics_clientapp[version] = fed
                row["fed_accuracy"] = fed.get("accuracy", "")
                row["fed_loss"] = fed.get("loss", "")
        self._last_eval_version = version
        self._last_eval_updates = self._updates
        self.recorder.on_evaluate(row)
        log_line("%s", format_evaluation(row, self._num_rounds_hint))

    def _federated_evaluation(self, grid: Grid) -> MetricRecord | None:
        """Run EVALUATE on sampled clients; training events wait meanwhile."""
        messages = self.configure_evaluate(
            self._version, self._current_arrays(), self._evaluate_config, grid
        )
        jobs = []
        for message in messages:
            client = int(message.content["config"]["client-id"])  # type: ignore[arg-type]
            job = _EvalJob(message=message, node_id=message.metadata.dst_node_id, client_id=client)
            self._transport.enqueue(job)
            jobs.append(job)
        deadline = time.monotonic() + self._timeout
        while not all(j.done for j in jobs) and time.monotonic() < deadline:
            self._pump(grid)
            time.sleep(self.poll_interval)
        replies = [j.reply for j in jobs if j.reply is not None and j.reply.has_content()]
        return self.aggregate_evaluate(self._version, replies)

    def _should_stop(self, num_rounds: int, target_accuracy: float | None) -> bool:
        if self._stop_reason or self._abort is not None:
            return True
        if self._version >= num_rounds:
            return True
        if (
            target_accuracy is not None
            and self._last_accuracy is not None
            and self._last_accuracy >= target_accuracy
        ):
            self._stop_reason = f"target accuracy {target_accuracy:g} reached"
            return True
        if self._clients and self._clients <= self._excluded:
            self._stop_reason = "every client was left out after failures"
            return True
        if not self._inflight and self._clients and self._clients <= (
            self._excluded | self._budget_spent()
        ):
            self._stop_reason = "every client spent its privacy budget (max_participations)"
            return True
        return False


def _blank(value: float | None) -> float | str:
    """A CSV cell: the value, or empty for None."""
    return "" if value is None else value


def _single_record(records: dict[str, Any], kind: str) -> Any:
    if len(records) != 1:
        raise UpdateError(f"reply must hold exactly one {kind}, it holds {len(records)}")
    return next(iter(records.values()))
