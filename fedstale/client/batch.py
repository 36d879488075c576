"""The ClientApp side of batched TRAIN messages (format: :mod:`fedstale.batching`).

:func:`batch_handler` turns the ClientApp's one-task train function (with
its mods) into the handler of ``train.batch`` messages: it splits the batch
into the tasks' own TRAIN messages, runs them one after the other, in the
order sent, through the same mods and function, against the node's one
``Context``, and answers with every task's reply in one message.

Per-client state stays exactly as if the tasks had come one by one: a
batch's tasks are for different clients hosted by the node, each task's
client reads its state from ``context.state`` as the previous task left it
and writes it back before the next starts (the bridge's
``client.<id>.`` views, the compression mod's residuals, the DP
accountants). A task that raises fails alone: its error goes into the reply
(code 2, Flower's ``CLIENT_APP_RAISED_EXCEPTION``, reason
``"<ExceptionType>: <message>"``), and the state changes it made are
undone, as Flower's engines keep no state from a ClientApp that raised; the
other tasks of the batch are unaffected.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from logging import ERROR

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.supercore import log

from ..batching import pack_replies, task_messages

CLIENT_APP_RAISED_EXCEPTION = 2
"""Flower's ``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``."""


def with_mods(handler: ClientAppCallable, mods: list[Mod]) -> ClientAppCallable:
    """``handler`` wrapped in ``mods``, the first outermost (as Flower wraps them)."""
    wrapped = handler
    for mod in reversed(mods):
        wrapped = _wrap(mod, wrapped)
    return wrapped


def _wrap(mod: Mod, call_next: ClientAppCallable) -> ClientAppCallable:
    def wrapped(message: Message, context: Context) -> Message:
        return mod(message, context, call_next)

    return wrapped


def run_task(train_one: ClientAppCallable, message: Message, context: Context) -> Message:
    """``train_one(message, context)``, or an error reply if it raised (state left as before)."""
    before = dict(context.state.items())
    try:
        return train_one(message, context)
    except Exception as err:  # pylint: disable=broad-exception-caught
        log(ERROR, "a task of a batch raised: %s", traceback.format_exc())
        for key in list(context.state.keys()):
            del context.state[key]
        for key, record in before.items():
            context.state[key] = record
        reason = f"{type(err).__name__}: {err}"
        return Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


def batch_handler(train_one: ClientAppCallable) -> Callable[[Message, Context], Message]:
    """The ``train.batch`` handler running each task through ``train_one``."""

    def handle(message: Message, context: Context) -> Message:
        replies, seconds = [], []
        for task in task_messages(message):
            started = time.perf_counter()
            replies.append(run_task(train_one, task, context))
            seconds.append(time.perf_counter() - started)
        return pack_replies(message, replies, seconds)

    return handle
