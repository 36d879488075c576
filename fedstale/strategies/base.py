"""The asynchronous event loop shared by all fedstale strategies.

:class:`AsyncStrategy` overrides Flower's ``Strategy.start()``: instead of
rounds of ``send_and_receive``, it keeps ``concurrency`` clients busy with
``Grid.push_messages`` and merges each reply as it comes back through
``Grid.pull_messages``. Subclasses only say how updates change the model
(:meth:`~fedstale.strategies.hooks.StrategyHooks.aggregate_updates`); the
loop does the rest:

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
  after new versions; :meth:`AsyncStrategy.start` with ``resume=`` continues
  from one (see :mod:`fedstale.resume`).
- **Per node**, at most ``max_inflight_per_node`` messages are in flight (1 by
  default), because Flower's simulation engine runs two messages for one
  node against copies of the same ``Context`` and keeps only the last write
  (a deployment SuperNode runs a node's messages one after the other).

:meth:`AsyncStrategy.start` is the loop itself: dispatch, take the next due
task from the clock (pumping the transport only when none is due, so the
tasks dispatched after a batch of replies leave together), process it, and
after a new version evaluate and offer a resume point. The steps are in
:mod:`.loop`; each is a few calls to the run's parts, one a module: the
client pool and its selection policy (:mod:`.pool`), placement on SuperNodes
(:mod:`.placement`), the dispatcher (:mod:`.dispatch`), the transport
(:mod:`.transport`) and the courier that turns its events into task outcomes
(:mod:`.courier`, reading replies with :mod:`.replies`), the clock
(:mod:`fedstale.simulation.clock`), the tasks in flight (:mod:`.inflight`),
model versions and base-model snapshots (:mod:`.versions`), bookkeeping and
CSV rows (:mod:`.ledger`), evaluation (:mod:`.evaluator`) and the resume
state (:mod:`.run_state`). What a strategy overrides is in :mod:`.hooks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from ..aggregation.staleness import Polynomial, StalenessFunction
from ..availability import AlwaysOnline, Availability
from ..progress import log_line
from ..simulation.clock import Clock, VirtualClock, WallClock
from .failfast import FailFast
from .ledger import train_metrics
from .loop import EventLoop
from .pool import SelectionPolicy
from .recorder import NullRecorder, Recorder
from .selection import RandomSelection
from .trust_helpers import trust_cell

if TYPE_CHECKING:
    from ..aggregation.privacy import CentralGaussianMechanism
    from ..aggregation.trust import TrustTracker
    from ..simulation.adversary import Adversary


class AsyncStrategy(EventLoop):  # pylint: disable=too-many-instance-attributes
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
        Orders replies. None means :class:`~fedstale.simulation.WallClock`.
    staleness : StalenessFunction | None (default: None)
        s(τ); None means FedBuff's 1/√(1 + τ) (``Polynomial(a=0.5)``).
    max_staleness : int | None (default: None)
        Drop updates with τ above this (Papaya's ``max_staleness``).
    max_staleness_seconds : float | None (default: None)
        Drop updates whose base version was made more than this many clock
        seconds before they are delivered (staleness in time).
    lr_delay_alpha : float (default: 0.0)
        α_lr of the client learning rate γ0 / (1 + α_lr · τ_last): γ0 is ``lr``
        of ``train_config``, τ_last the client's last staleness (0 at first).
    eval_every : int (default: 1)
        Evaluate every this many versions (and at version 0 and at the end).
    num_evaluate_clients : int (default: 0)
        Clients asked for federated evaluation each time (0: only ``evaluate_fn``).
    eval_targets : tuple[float, ...] (default: ())
        Accuracies whose first reach is recorded (``Recorder.on_target``).
    max_retries : int (default: 2)
        Consecutive failures after which a client is left out.
    retry_backoff : tuple[float, float] (default: (0.0, 60.0))
        (b, b_max): a client's k-th consecutive failure delays its next
        dispatch by min(b·2^(k−1), b_max) wall seconds (b = 0: none).
    message_ttl : float (default: 3600.0)
        Time-to-live of every message, in seconds.
    max_inflight_per_node : int (default: 1)
        Messages in flight per SuperNode at most.
    push_window : int | None (default: None)
        Messages in flight in all at most; None takes the clock's default
        (see :mod:`fedstale.strategies.transport`).
    tasks_per_message : int (default: 0)
        TRAIN tasks per message to a SuperNode whose ClientApp accepts batches
        (:mod:`fedstale.strategies.batches`): 0 auto, up to ``batch_seconds``
        of estimated ClientApp compute (default 0.25); 1 one; N at most N.
    batch_seconds : float (default: 0.25)
        The auto batch's budget of estimated ClientApp compute, in seconds.
    poll_interval, max_poll_interval : float (default: 0.005, 0.0)
        Wall seconds between empty pulls, doubling from the first up to the second (0: auto; :mod:`.polling`).
    seed : int (default: 0)
        Seed of client selection and of the per-task training seeds.
    trust : TrustTracker | None (default: None)
        Scores clients and quarantines those below a threshold
        (:mod:`fedstale.aggregation.trust`); strategies multiply their
        weights by the client's trust. None: every client counts fully.
    adversary : Adversary | None (default: None)
        Simulation only: the Byzantine clients and their attacks
        (:mod:`fedstale.simulation.adversary`).
    central_dp : CentralGaussianMechanism | None (default: None)
        Server-side DP: strategies clip the updates they aggregate and noise
        each aggregate (:mod:`fedstale.aggregation.privacy`). None: off.
    recorder : Recorder | None (default: None)
        Receives rows for ``clients.csv``/``metrics.csv`` and model versions.
    max_participations : int (default: 0)
        Tasks a client may get (its DP-SGD budget; the run ends when all are spent). 0: any.
    fail_fast : int (default: 3)
        Stop with :class:`~fedstale.strategies.failfast.RunAborted` when the
        first replies, from this many clients, all fail the same way before
        any succeeds (:mod:`fedstale.strategies.failfast`). 0: never.
    selection : SelectionPolicy | None (default: None)
        Chooses idle clients (:mod:`fedstale.strategies.selection`); None is
        a uniform choice seeded by ``seed``.
    availability : Availability | None (default: None)
        Who is online when (:mod:`fedstale.availability`; needs
        the virtual clock): only online clients are dispatched, and a task
        whose client goes offline first is lost. None: always online.
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
        max_staleness_seconds: float | None = None,
        lr_delay_alpha: float = 0.0,
        eval_every: int = 1,
        num_evaluate_clients: int = 0,
        eval_targets: tuple[float, ...] = (),
        max_retries: int = 2,
        retry_backoff: tuple[float, float] = (0.0, 60.0),
        message_ttl: float = 3600.0,
        max_inflight_per_node: int = 1,
        push_window: int | None = None,
        tasks_per_message: int = 0,
        batch_seconds: float = 0.25,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.0,
        seed: int = 0,
        trust: TrustTracker | None = None,
        adversary: Adversary | None = None,
        central_dp: CentralGaussianMechanism | None = None,
        recorder: Recorder | None = None,
        max_participations: int = 0,
        fail_fast: int = 3,
        selection: SelectionPolicy | None = None,
        availability: Availability | None = None,
    ) -> None:
        if mode not in self.supported_modes:
            raise ValueError(
                f"{type(self).__name__} supports mode {' or '.join(self.supported_modes)}"
                f", got '{mode}'"
            )
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency, self.num_clients, self.mode = concurrency, num_clients, mode
        self.clock: Clock = clock if clock is not None else WallClock()
        self.staleness = staleness if staleness is not None else Polynomial(0.5)
        self.max_staleness, self.lr_delay_alpha = max_staleness, lr_delay_alpha
        self.max_staleness_seconds = max_staleness_seconds
        self.eval_every, self.num_evaluate_clients = max(1, eval_every), num_evaluate_clients
        self.eval_targets = tuple(eval_targets)
        self.max_retries, self.retry_backoff, self.max_participations = max_retries, retry_backoff, max_participations
        self.message_ttl, self.max_inflight_per_node = message_ttl, max_inflight_per_node
        self.push_window, self.poll_interval, self.max_poll_interval = push_window, poll_interval, max_poll_interval
        if tasks_per_message < 0 or batch_seconds <= 0:
            raise ValueError(
                "tasks_per_message must be >= 0 and batch_seconds > 0, "
                f"got {tasks_per_message}, {batch_seconds}"
            )
        self.tasks_per_message, self.batch_seconds = tasks_per_message, batch_seconds
        self.seed = seed
        self.trust, self.adversary, self.central_dp = trust, adversary, central_dp
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self.selection = selection if selection is not None else RandomSelection(seed)
        self.availability = availability if availability is not None else AlwaysOnline()
        if not isinstance(self.availability, AlwaysOnline) and not isinstance(self.clock, VirtualClock):
            raise ValueError("availability models are simulated: they need the virtual clock")
        self.fail_fast = FailFast(fail_fast)
        self._reset_run_state()

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log_summary(self)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Select clients for the free slots and build their TRAIN messages.

        ``server_round`` is the current model version. Each message carries
        ``arrays`` and ``config`` plus the task's ``client-id``,
        ``num-clients``, ``task-id``, ``seed`` and delay-aware ``lr``.
        """
        clients = self.pool.select(self.inflight.free_slots(self.mode, self.concurrency), self.clock.now)
        dispatcher = self.dispatcher
        return [
            dispatcher.train_message(dispatcher.new_task(c, server_round, config), arrays, config)
            for c in clients
        ]

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
        updates = self._updates_of(replies)
        if not updates:
            return None, None
        trust_before = {u.task.client_id: trust_cell(self.trust, u.task.client_id) for u in updates}
        new_model = self.aggregate_updates(self.model, updates)
        for update in updates:
            self.ledger.count_merged(update)
            row = self._row(update.task, update, accepted=update.accepted, reason=update.reason)
            row["trust"] = trust_before[update.task.client_id]
            self.recorder.on_update(row)
        metrics = train_metrics(updates)
        if new_model is None:
            return None, metrics
        arrays = self.global_model.advance(new_model, self.clock.now)
        self.snapshots.drop_unused(self.version)
        self.result.train_metrics_clientapp[self.version] = metrics
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Build EVALUATE messages for ``num_evaluate_clients`` sampled clients."""
        chosen = self.pool.sample_for_evaluation(self.num_evaluate_clients, self.seed, server_round)
        evaluate = MessageType.EVALUATE
        return [self.placement.message(c, evaluate, arrays, config, server_round) for c in chosen]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Average the clients' evaluation metrics, weighted by ``num-examples``."""
        contents = [r.content for r in replies if r.has_content()]
        return aggregate_metricrecords(contents, "num-examples") if contents else None

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
        self._timeout = timeout
        self._train_config = ConfigRecord() if train_config is None else train_config
        self._evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        self._begin(grid, initial_arrays, num_rounds, evaluate_fn, resume)
        while not self._should_stop(num_rounds, target_accuracy):
            self._dispatch(grid)
            if self._wake(grid, num_rounds, max_virtual_time):
                continue
            task = self.clock.next_due(self.inflight)
            if task is None:
                # Deliver every reply that is due before moving messages: the
                # tasks dispatched meanwhile then leave together, in batches.
                # What arrived may let an event (a client online, a timer) go
                # first: the clock decides on the state it is shown.
                self.courier.pump(grid)
                if self._wake(grid, num_rounds, max_virtual_time):
                    continue
                task = self.clock.next_due(self.inflight)
            if task is None:
                if not self.inflight and not self.pool.backing_off():
                    log_line("no client left to train; stopping", warning=True)
                    break
                self.transport.poll.wait()
                continue
            if self._passes_budget(task.finish_time, max_virtual_time):
                break
            self.clock.advance(task)
            if self.process(task):
                self._after_new_version(grid, num_rounds)
        return self._end(grid)



def log_summary(strategy: AsyncStrategy) -> None:
    """Log ``strategy``'s configuration (:meth:`AsyncStrategy.summary`)."""
    log(INFO, "\t├──> Mode: %s, concurrency C=%d", strategy.mode, strategy.concurrency)
    log(INFO, "\t├──> Clients: %s", strategy.num_clients or "one per SuperNode")
    log(INFO, "\t├──> Staleness: %s", strategy.staleness.describe())
    limit = "none" if strategy.max_staleness is None else strategy.max_staleness
    log(INFO, "\t├──> max_staleness: %s", limit)
    if strategy.central_dp is not None:
        log(INFO, "\t├──> Privacy: %s", strategy.central_dp.describe())
    log(INFO, "\t├──> Availability: %s", strategy.availability.describe())
    log(INFO, "\t└──> Clock: %s", strategy.clock.name)
