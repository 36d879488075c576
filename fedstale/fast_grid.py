"""The ServerApp's Grid on a deployment, with replies pulled without a 1 s stall.

Flower 1.41's ``HttpGrid.pull_messages`` (``flwr/superlink/grid/http_grid.py``,
the Grid a ServerApp gets on a SuperLink) returns a reply as soon as the
SuperNode has pushed the reply *message*; its objects (the model's arrays)
arrive right after it. It then pulls the objects with Flower's
``pull_objects`` at its default backoff: an object not there yet is asked
for again after 1 s, then 2 s, 4 s... An asynchronous strategy polls for
replies every few milliseconds, so it nearly always asks before the objects
are there, and its loop (one thread) stalls 1-3 s per reply: measured here,
0.8-2.8 s per TRAIN reply with one SuperNode at load 14, during which no
other reply is merged and no new task is sent, so SuperNodes whose queue ran
dry fall into their 3 s empty-pull sleep.

:func:`fast_pulls` wraps such a Grid: everything is Flower's, except that
:meth:`FastPullGrid.pull_messages` makes the same Runtime API calls
(``PullMessages``, ``PullObject`` per object, ``ConfirmMessageReceived``)
with Flower's own helpers, asking again for a missing object after 20 ms
(doubling, at most 0.5 s). Any other Grid (simulation) is returned as is.
Written against Flower 1.41 (it reads ``HttpGrid``'s Runtime API client);
on another version, or a Grid without that client, it returns the Grid
unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import ERROR
from typing import Any, cast

from flwr.app import Message
from flwr.serverapp import Grid

PULL_BACKOFF = (0.02, 0.5)
"""(first, longest) wait in seconds before asking again for a reply's object
that is not at the SuperLink yet (Flower's default: (1, 10))."""


class FastPullGrid(Grid):
    """A Grid that delegates to Flower's ``HttpGrid`` but pulls replies' objects promptly."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    # --- delegated as is
    def set_run(self, run: Any) -> None:
        """As the wrapped Grid."""
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        """As the wrapped Grid."""
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pylint: disable=signature-differs
        """As the wrapped Grid."""
        return self._grid.create_message(*args, **kwargs)  # type: ignore[no-any-return]

    def get_node_ids(self) -> Iterable[int]:
        """As the wrapped Grid."""
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        """As the wrapped Grid."""
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """As the wrapped Grid."""
        return self._grid.push_messages(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    # --- the one difference
    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """``HttpGrid.pull_messages`` with a short backoff for objects not there yet."""
        # pylint: disable=import-outside-toplevel,protected-access
        import httpx
        from flwr.app import Metadata
        from flwr.app.error import Error
        from flwr.app.message import make_message
        from flwr.common.constant import ErrorCode
        from flwr.proto.message_pb2 import ConfirmMessageReceivedRequest  # pylint: disable=no-name-in-module
        from flwr.proto.runtime_pb2 import PullAppMessagesRequest  # pylint: disable=no-name-in-module
        from flwr.supercore import log
        from flwr.supercore.constant import SYSTEM_MESSAGE_TYPE
        from flwr.supercore.date import now
        from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
        from flwr.supercore.inflatable.inflatable_protobuf_utils import make_pull_object_fn_protobuf
        from flwr.supercore.inflatable.inflatable_utils import (
            ObjectPullError,
            inflate_object_from_contents,
            pull_objects,
        )

        client = self._grid._runtime_client  # type: ignore[attr-defined]
        node = self._grid.node  # type: ignore[attr-defined]
        run_id = self._grid.run.run_id
        try:
            res = client.PullMessages(PullAppMessagesRequest(message_ids=list(message_ids)))
        except httpx.HTTPStatusError as err:
            if err.response.status_code == httpx.codes.REQUEST_ENTITY_TOO_LARGE:
                log(ERROR, "PullMessages: the reply is too large for the SuperLink's Runtime API")
                return []
            raise
        replies: list[Message] = []
        for proto, tree in zip(res.messages_list, res.message_object_trees, strict=True):
            message_id = proto.metadata.message_id
            try:
                contents = pull_objects(
                    object_ids=[t.object_id for t in iterate_object_tree(tree)],
                    pull_object_fn=make_pull_object_fn_protobuf(
                        pull_object_protobuf=client.PullObject, node=node, run_id=run_id
                    ),
                    initial_backoff=PULL_BACKOFF[0],
                    backoff_cap=PULL_BACKOFF[1],
                    max_tries_per_object=None,
                )
            except ObjectPullError as err:  # as HttpGrid: an error reply in its place
                replies.append(make_message(
                    metadata=Metadata(
                        run_id=run_id, message_id="", src_node_id=node.node_id, dst_node_id=node.node_id,
                        message_type=SYSTEM_MESSAGE_TYPE, group_id="", ttl=0,
                        reply_to_message_id=proto.metadata.reply_to_message_id, created_at=now().timestamp(),
                    ),
                    error=Error(code=ErrorCode.MESSAGE_UNAVAILABLE,
                                reason=f"Reply message objects are unavailable. {err}"),
                ))
                continue
            client.ConfirmMessageReceived(
                ConfirmMessageReceivedRequest(node=node, run_id=run_id, message_object_id=message_id)
            )
            message = cast(Message, inflate_object_from_contents(message_id, contents))
            message.metadata.__dict__["_message_id"] = message_id
            replies.append(message)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every reply is in or ``timeout`` s passed (polling every 0.1 s)."""
        ids = set(self.push_messages(messages))
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while timeout is None or time.time() < end:
            pulled = list(self.pull_messages(ids))
            replies.extend(pulled)
            ids.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if not ids:
                break
            time.sleep(0.1)
        return replies


def fast_pulls(grid: Grid) -> Grid:
    """``grid`` wrapped in :class:`FastPullGrid` if it is Flower 1.41's ``HttpGrid``, else ``grid``."""
    try:
        from flwr.superlink.grid.http_grid import HttpGrid  # pylint: disable=import-outside-toplevel
    except ImportError:
        return grid
    if type(grid) is not HttpGrid or not hasattr(HttpGrid, "_runtime_client"):  # pylint: disable=unidiomatic-typecheck
        return grid
    return FastPullGrid(grid)
