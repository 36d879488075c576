"""Reading a TRAIN reply: is it usable, and what model does it carry?

A reply fails when it is an error reply (Flower's, or a ClientApp that
raised) or a malformed update: not exactly one ArrayRecord and one
MetricRecord, no ``num-examples``, or arrays that do not decode to a finite
model of the global model's layout. Error codes that a retry reproduces,
and malformed updates, are marked as repeating failures (see
:mod:`fedstale.strategies.failfast`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord, Message

from ..aggregation.compression import is_compressed, read_compressed
from ..aggregation.vectors import ModelCodec, UpdateError
from .failfast import DETERMINISTIC_ERROR_CODES
from .task import Task


def read_reply(
    task: Task, reply: Message, decode: Callable[[Task, ArrayRecord], torch.Tensor]
) -> str | None:
    """Check ``reply`` to ``task`` and keep what it carries on the task.

    On success ``task.params`` (from ``decode``), ``task.metrics`` and
    ``task.bytes_up`` are set. On failure ``task.failure_repeats`` says
    whether a retry would fail the same way.

    Returns
    -------
    str | None
        Why the reply failed (the ``reason`` column), or None if it is usable.
    """
    if reply.has_error():
        task.failure_repeats = reply.error.code in DETERMINISTIC_ERROR_CODES
        return f"error reply ({reply.error.code}): {reply.error.reason}"
    try:
        arrays = single_record(reply.content.array_records, "ArrayRecord")
        metrics = single_record(reply.content.metric_records, "MetricRecord")
        if "num-examples" not in metrics:
            raise UpdateError("MetricRecord has no 'num-examples'")
        task.params = decode(task, arrays)
    except UpdateError as err:
        task.failure_repeats = True
        return f"malformed update: {err}"
    task.metrics = dict(metrics)
    task.bytes_up = sum(len(a.data) for a in arrays.values())
    return None


def decode_model(
    arrays: ArrayRecord, codec: ModelCodec, base: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The client's model x_local (flat) from a dense or compressed ArrayRecord.

    A dense reply is read with the global model's layout
    (:meth:`ModelCodec.flatten`). A compressed one
    (:mod:`fedstale.aggregation.compression`, recognised by its
    ``fedstale.delta.*`` keys) carries Δ̂ only: x_local = x_base + Δ̂, where
    ``base()`` gives x_base, the model the task started from.

    Raises
    ------
    UpdateError
        If the arrays do not decode to a finite model; for a compressed
        reply, naming the offending key.
    """
    if is_compressed(arrays):
        delta = read_compressed(arrays, codec.num_parameters)
        local = base() + delta
        if not bool(torch.isfinite(local).all()):
            raise UpdateError("update contains NaN or infinite values")
        return local
    return codec.flatten(arrays)


def single_record(records: dict[str, Any], kind: str) -> Any:
    """The one record of ``records``.

    Raises
    ------
    UpdateError
        If there is not exactly one.
    """
    if len(records) != 1:
        raise UpdateError(f"reply must hold exactly one {kind}, it holds {len(records)}")
    return next(iter(records.values()))
