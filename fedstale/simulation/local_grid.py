"""An in-process Flower ``Grid`` that runs a ``ClientApp`` in the calling thread.

``LocalGrid`` implements the Grid API (``push_messages``/``pull_messages``/
``get_node_ids``) over a few simulated nodes, each with its own ``Context``,
and executes pushed messages inside ``pull_messages``. It starts in
milliseconds and needs no SuperLink or Ray, which makes it the tool for unit
tests, notebooks and benchmarks of the strategies themselves. Replies come
back out of order when ``order="random"`` (seeded), as they do from Flower's
simulation engine and from real SuperNodes.

It is *not* Flower's simulation engine: ``flwr run`` (Ray backend) is the
real path, and the end-to-end tests use it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING
from uuid import uuid4

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

if TYPE_CHECKING:
    from ..config import Config
    from ..strategies import AsyncStrategy, Recorder

CLIENT_APP_ERROR_CODE = 2
"""Flower's ``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``."""


class LocalGrid(Grid):
    """Run ``client_app`` on ``num_nodes`` in-process nodes.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs.
    num_nodes : int (default: 2)
        Number of nodes; node ``i`` has ``partition-id = i`` and
        ``num-partitions = num_nodes`` in its ``node_config``.
    order : str (default: "fifo")
        ``fifo`` executes messages in push order; ``random`` picks the next
        message at random (seeded by ``seed``).
    per_pull : int (default: 1)
        Messages executed per ``pull_messages`` call (like parallel workers).
    seed : int (default: 0)
        Seed of the random order and of the node ids.
    run_config : dict | None
        The ``run_config`` of every node's Context.
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int = 2,
        order: str = "fifo",
        per_pull: int = 1,
        seed: int = 0,
        run_config: dict | None = None,
    ) -> None:
        if order not in ("fifo", "random"):
            raise ValueError(f"order must be fifo or random, got '{order}'")
        self.client_app = client_app
        self.order = order
        self.per_pull = per_pull
        self._rng = np.random.default_rng(seed)
        ids = self._rng.choice(2**62, size=num_nodes, replace=False)
        self._node_ids = [int(i) + 2 for i in ids]
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i, node in enumerate(self._node_ids)
        }
        _ensure_task_identity()
        self._pending: list[Message] = []
        self._replies: dict[str, Message] = {}
        self._run = Run.create_empty(1)
        self.executed = 0
        """Number of messages executed so far."""

    def set_run(self, run: Run) -> None:
        """Set the run."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run."""
        return self._run

    def create_message(  # pylint: disable=too-many-arguments,R0917
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Deprecated in Flower; build ``Message`` directly."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The node ids."""
        return list(self._node_ids)

    def get_nodes(self):  # type: ignore[no-untyped-def]
        """Not tracked by LocalGrid (node ids only)."""
        return []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue messages; return their ids (None for an unknown node)."""
        ids: list[str] = []
        for message in messages:
            if message.metadata.dst_node_id not in self.contexts:
                ids.append(None)  # type: ignore[arg-type]
                continue
            message_id = uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            message.metadata.__dict__["_run_id"] = self._run.run_id
            self._pending.append(message)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Execute up to ``per_pull`` queued messages; return finished replies."""
        for _ in range(min(self.per_pull, len(self._pending))):
            index = 0 if self.order == "fifo" else int(self._rng.integers(len(self._pending)))
            self._execute(self._pending.pop(index))
        wanted = set(message_ids)
        ready = [self._replies.pop(i) for i in list(self._replies) if i in wanted]
        return ready

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull until every reply is in."""
        pending = {i for i in self.push_messages(messages) if i}
        replies: list[Message] = []
        while pending:
            for reply in self.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
        return replies

    def _execute(self, message: Message) -> None:
        context = self.contexts[message.metadata.dst_node_id]
        try:
            reply = self.client_app(message, context)
        except Exception as err:  # pylint: disable=broad-except
            # Flower's engine turns a raising ClientApp into an error reply.
            reason = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
            reply = Message(Error(code=CLIENT_APP_ERROR_CODE, reason=reason), reply_to=message)
        reply.metadata.__dict__["_message_id"] = uuid4().hex
        self.executed += 1
        self._replies[message.metadata.message_id] = reply


def _ensure_task_identity() -> None:
    """Give this process a server-side identity when Flower has not.

    ``Message(...)`` reads the run, node and task ids of the process it is
    built in; a ServerApp started by Flower has them, a test does not.
    """
    for attribute, value in (("run_id", 1), ("node_id", 1), ("task_id", 0)):
        try:
            getattr(TaskIdentity, attribute)
        except RuntimeError:
            setattr(TaskIdentity, attribute, value)


def run_in_process(
    config: Config,
    recorder: Recorder | None = None,
    client_app: ClientApp | None = None,
    **grid_options: object,
) -> tuple[Result, AsyncStrategy]:
    """Run an experiment on a :class:`LocalGrid` (no SuperLink, no Ray).

    Builds everything from ``config`` as the ServerApp does (strategy, clock,
    initial model, centralized evaluation) and runs fedstale's ClientApp, or
    ``client_app``, in this process. ``grid_options`` go to
    :class:`LocalGrid` (``num_nodes``, ``order``, ``per_pull``, ``seed``).
    Nothing is written to disk unless ``recorder`` does.
    """
    # pylint: disable=import-outside-toplevel
    from ..builders import build_strategy, check_data, run_strategy

    check_data(config)
    if client_app is None:
        from ..client_app import app as client_app  # type: ignore[no-redef]
    grid = LocalGrid(client_app, **grid_options)  # type: ignore[arg-type]
    strategy = build_strategy(config, recorder)
    return run_strategy(strategy, grid, config), strategy
