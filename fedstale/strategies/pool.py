"""The client population: who is idle, busy or left out, and who trains next.

:class:`ClientPool` keeps the books of a run's clients: which are training
(busy), which were left out after failures, which wait to be dispatched
again after a failure (first in line, possibly after a backoff), how many
tasks each was sent (its participations, capped by ``max_participations``),
the staleness of its last update (for the delay-aware learning rate) and
the virtual duration, loss and example count of its last intact reply (for
time- and utility-aware selection).

Selection has two parts. The pool decides who *may* train: an idle client
that is online (:mod:`fedstale.availability`), is not left out,
has budget left and is not backing off; clients to retry come first, in the
order they failed. A :class:`SelectionPolicy` decides who *does* among the
other idle clients: one class a file in :mod:`fedstale.strategies.selection`
(``random``, the default, ``round_robin``, ``least_participated``,
``fastest_first``, ``oort``), each reading the pool's books and keeping its
own state across a resume through ``run_state``/``load_run_state``.
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..availability import AlwaysOnline, Availability
from ..progress import log_line
from .idle import IdleClients
from .selection.random_choice import RandomSelection  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from .task import Task

BOOKS = (
    "excluded", "retry_first", "consecutive_failures", "last_staleness", "task_index",
    "last_duration", "last_loss", "last_examples",
)
"""The per-client books a resume point saves (see :meth:`ClientPool.books`)."""


class SelectionPolicy(Protocol):
    """Chooses which idle clients train next.

    A policy is reset at the start of every run and saved in resume points,
    so a resumed run chooses as the uninterrupted one would have.
    """

    name: str

    def reset(self) -> None:
        """Start a new run."""

    def choose(self, idle: list[int], count: int, pool: ClientPool) -> list[int]:
        """Pick ``count`` distinct clients among ``idle`` (sorted, ``count <= len(idle)``).

        A policy whose ``lazy_idle`` is True is given an
        :class:`~fedstale.strategies.idle.IdleClients` (a sorted sequence
        that is not listed) when the population is ``0 .. N-1``; any other
        gets a list.
        """

    def run_state(self) -> Any:
        """What :meth:`load_run_state` needs to continue the run."""

    def load_run_state(self, state: Any) -> None:
        """Continue from what :meth:`run_state` returned."""


class ClientPool:  # pylint: disable=too-many-instance-attributes
    """The run's clients and their books.

    Parameters
    ----------
    policy : SelectionPolicy
        Chooses among idle clients.
    max_retries : int (default: 2)
        Consecutive failures after which a client is left out.
    retry_backoff : tuple[float, float] (default: (0.0, 60.0))
        (b, b_max): after its k-th consecutive failure a client waits
        min(b·2^(k−1), b_max) wall seconds before it may be dispatched
        again (b = 0: no wait).
    max_participations : int (default: 0)
        Tasks a client may be sent at most (0: unlimited).
    retry : bool (default: True)
        Whether a failed client is put first in line (async mode); in sync
        mode each round selects anew.
    availability : Availability | None (default: None)
        Who is online when (:mod:`fedstale.availability`); None:
        everyone, always.
    """

    def __init__(
        self,
        policy: SelectionPolicy,
        *,
        max_retries: int = 2,
        retry_backoff: tuple[float, float] = (0.0, 60.0),
        max_participations: int = 0,
        retry: bool = True,
        availability: Availability | None = None,
    ) -> None:
        self.policy = policy
        self.availability = availability if availability is not None else AlwaysOnline()
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_participations = max_participations
        self.retry = retry
        self.clients: set[int] = set()
        self._population = -1
        """N when ``clients`` is 0 .. N-1 as :meth:`populate` made it."""
        self.busy: set[int] = set()
        self.excluded: set[int] = set()
        """Clients left out after ``max_retries`` consecutive failures."""
        self.retry_first: list[int] = []
        self.retry_at: dict[int, float] = {}
        self.consecutive_failures: dict[int, int] = {}
        self.last_staleness: dict[int, int] = {}
        self.task_index: dict[int, int] = {}
        """Tasks sent to each client so far."""
        self.last_duration: dict[int, float] = {}
        """Virtual seconds from dispatch to finish of each client's last intact reply."""
        self.last_loss: dict[int, float] = {}
        """Loss of each client's last intact reply (√ of its ``train-loss-squared``, else its ``train-loss``)."""
        self.last_examples: dict[int, int] = {}
        """``num-examples`` of each client's last intact reply."""

    def populate(self, num_clients: int) -> None:
        """The population is clients ``0 .. num_clients - 1``."""
        self.clients = set(range(num_clients))
        self._population = num_clients

    def participations(self, client_id: int) -> int:
        """Tasks sent to ``client_id`` so far (failed ones too)."""
        return self.task_index.get(client_id, 0)

    def budget_spent(self) -> set[int]:
        """Clients sent ``max_participations`` tasks already (none when unlimited).

        Every dispatched task counts, failed ones too: the client may have
        trained (and spent privacy) before its reply was lost.
        """
        if self.max_participations <= 0:
            return set()
        return {c for c, n in self.task_index.items() if n >= self.max_participations}

    def backing_off(self) -> set[int]:
        """Failed clients whose retry backoff has not elapsed yet."""
        now = time.monotonic()
        for client in [c for c, at in self.retry_at.items() if at <= now]:
            del self.retry_at[client]
        return set(self.retry_at)

    def select(self, count: int, now: float = 0.0) -> list[int]:
        """Pick up to ``count`` clients online at ``now``: those to retry first, then the policy's.

        A client to retry that is offline keeps its place in line.

        Returns
        -------
        list[int]
            The clients, in dispatch order (fewer if not enough may train).
        """
        chosen: list[int] = []
        spent = self.budget_spent()
        waiting = self.backing_off() | self.offline(now)
        for client in [c for c in self.retry_first if c not in waiting]:
            if len(chosen) == count:
                break
            self.retry_first.remove(client)
            if client not in self.busy and client not in self.excluded | spent:
                chosen.append(client)
        unavailable = self.busy | self.excluded | spent | set(chosen) | waiting
        idle: list[int] | IdleClients
        if getattr(self.policy, "lazy_idle", False) and len(self.clients) == self._population:
            idle = IdleClients(self._population, unavailable)  # the same sorted ids, not listed
        else:
            idle = sorted(self.clients - unavailable)
        extra = min(count - len(chosen), len(idle))
        if extra > 0:
            chosen += self.policy.choose(idle, extra, self)
        return chosen

    def offline(self, now: float) -> set[int]:
        """Clients not online at ``now`` (none when everyone always is)."""
        if isinstance(self.availability, AlwaysOnline):
            return set()
        return {c for c in self.clients if not self.availability.is_online(c, now)}

    def next_online(self, now: float) -> float:
        """When the first idle client that may train and is offline at ``now`` comes online.

        inf when none will (or everyone is always online).
        """
        if isinstance(self.availability, AlwaysOnline):
            return math.inf
        idle = self.clients - self.busy - self.excluded - self.budget_spent()
        return min(
            (self.availability.next_online(c, now) for c in sorted(idle)
             if not self.availability.is_online(c, now)),
            default=math.inf,
        )

    def sample_for_evaluation(self, count: int, seed: int, version: int) -> list[int]:
        """``count`` clients not left out, for federated evaluation at ``version`` (sorted).

        Drawn with their own generator (``[seed, 3, version]``), so
        evaluation does not change which clients train.
        """
        available = sorted(self.clients - self.excluded)
        count = min(count, len(available))
        if count <= 0:
            return []
        rng = np.random.default_rng([seed, 3, version])
        return sorted(int(c) for c in rng.choice(available, size=count, replace=False))

    def start_task(self, client_id: int) -> int:
        """A task was dispatched to ``client_id``: it is busy; return the task's index."""
        index = self.task_index.get(client_id, 0)
        self.task_index[client_id] = index + 1
        self.busy.add(client_id)
        return index

    def task_ended(self, client_id: int) -> None:
        """The client's task was delivered (or failed): it is idle."""
        self.busy.discard(client_id)

    def on_success(self, client_id: int, staleness: int) -> None:
        """A reply arrived intact, with staleness ``staleness``."""
        self.consecutive_failures[client_id] = 0
        self.last_staleness[client_id] = staleness

    def on_reply(self, task: Task, staleness: int) -> None:
        """An intact reply to ``task`` was delivered: :meth:`on_success`, and its duration, loss, size."""
        client = task.client_id
        self.on_success(client, staleness)
        assert task.finish_time is not None
        self.last_duration[client] = task.finish_time - task.dispatch_time
        self.last_examples[client] = int(task.metrics["num-examples"])
        squared, loss = task.metrics.get("train-loss-squared"), task.metrics.get("train-loss")
        if squared is not None:
            self.last_loss[client] = float(squared) ** 0.5  # type: ignore[operator]
        elif loss is not None:
            self.last_loss[client] = float(loss)  # type: ignore[arg-type]

    def on_failure(self, client_id: int, reason: str) -> None:
        """A task failed: leave the client out, or line it up for a retry."""
        count = self.consecutive_failures.get(client_id, 0) + 1
        self.consecutive_failures[client_id] = count
        if count > self.max_retries:
            self.excluded.add(client_id)
            log_line(
                "client %d left out after %d consecutive failures: %s",
                client_id,
                count,
                reason,
                warning=True,
            )
        elif self.retry:
            self.retry_first.append(client_id)
            base, longest = self.retry_backoff
            if base > 0:
                wait = min(base * 2 ** (count - 1), longest)
                self.retry_at[client_id] = time.monotonic() + wait

    def stop_reason(self, idle: bool) -> str:
        """Why no client can train any more ("" while some can).

        Parameters
        ----------
        idle : bool
            Whether no task is in flight (a spent budget ends the run only
            once the last tasks are in).
        """
        if self.clients and self.clients <= self.excluded:
            return "every client was left out after failures"
        if idle and self.clients and self.clients <= (self.excluded | self.budget_spent()):
            return "every client spent its privacy budget (max_participations)"
        return ""

    def books(self) -> dict[str, Any]:
        """Copies of the books named in :data:`BOOKS` (for a resume point)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in BOOKS}

    def load_books(self, books: dict[str, Any]) -> None:
        """Put back what :meth:`books` returned."""
        for name, value in books.items():
            setattr(self, name, copy.deepcopy(value))
