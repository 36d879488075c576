"""Update compression as a Flower client mod: top-k, int8, error feedback.

When ``compression.method`` or ``compression.quantize`` is set, the server
adds to every TRAIN message's ConfigRecord (see
:func:`fedstale.builders.train_config`):

==============================  =========================================
key                             meaning
==============================  =========================================
``compression``                 ``topk`` or ``none`` (every coordinate)
``compression-ratio``           share of the coordinates top-k keeps
``compression-error-feedback``  keep what was not sent for the next update
``compression-quantize``        ``none`` (float32 values) or ``int8``
==============================  =========================================

:func:`compression_mod`, installed on fedstale's ClientApp, lets the client
train as usual and then replaces the reply's model by a compressed update
(format: :mod:`fedstale.aggregation.compression`):

1. Δ = x_returned − x_received over every array of the ArrayRecord, in
   record order, raveled (the server's flat layout), in float64;
2. with error feedback, v = e + Δ, where e is the client's residual
   (zero at first); without it, v = Δ;
3. top-k keeps the k = max(1, round(ratio · d)) coordinates of largest
   |v| (method ``none`` keeps all d), as float32 values, or int8 levels
   round(v / s) with one float32 scale s = max|v| / 127 per update;
4. with error feedback, e ← v − Δ̂, where Δ̂ = :func:`decode_delta` of what
   is sent, i.e. exactly what the server reconstructs (so quantisation error
   is fed back too): the error-feedback rule of Stich et al. (2018),
   e ← (e + Δ) − C(e + Δ).

The residual belongs to the *virtual* client: mods see the node's whole
Context, so it is stored in ``context.state`` under the bridge's
``client.<client-id>.`` prefix (key ``client.<id>.compression-residual``,
an ArrayRecord with one float64 array ``residual`` of length d), next to the
client's other state; without a ``client-id`` (one client per node) it is
``compression-residual``. The client cannot know whether the server will
use an update (it may be dropped as too stale), so e is updated when the
reply is sent.

Flower does not ship update compression (its mods cover DP clipping and
noise), hence this hand-written mod. Messages without ``compression`` (the
default), EVALUATE and QUERY messages and error replies pass through
untouched; an unknown method or quantisation raises ValueError, which the
ClientApp turns into an error reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from ..aggregation.compression import (
    INDICES_KEY,
    INT8_LEVELS,
    SCALE_KEY,
    SIZE_KEY,
    VALUES_KEY,
    decode_delta,
)
from .bridge import STATE_PREFIX
from .updates import flat_delta

METHODS = ("none", "topk")
QUANTIZERS = ("none", "int8")
RESIDUAL_KEY = "compression-residual"
"""State key of a client's residual (under ``client.<id>.`` for a virtual client)."""
RESIDUAL_ARRAY = "residual"


@dataclass(frozen=True)
class CompressionSettings:
    """The compression a TRAIN message asks for (its ``compression*`` keys)."""

    method: str = "none"
    ratio: float = 0.1
    error_feedback: bool = True
    quantize: str = "none"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CompressionSettings | None:
        """Settings from a message config; None when it asks for no compression.

        Raises
        ------
        ValueError
            For an unknown ``compression`` or ``compression-quantize``, or a
            ``compression-ratio`` outside (0, 1].
        """
        if "compression" not in config:
            return None
        settings = cls(
            method=str(config["compression"]),
            ratio=float(config.get("compression-ratio", cls.ratio)),
            error_feedback=bool(config.get("compression-error-feedback", cls.error_feedback)),
            quantize=str(config.get("compression-quantize", cls.quantize)),
        )
        if settings.method not in METHODS:
            raise ValueError(
                f"unknown compression '{settings.method}'; accepted: {', '.join(METHODS)}"
            )
        if settings.quantize not in QUANTIZERS:
            raise ValueError(
                f"unknown compression-quantize '{settings.quantize}'; "
                f"accepted: {', '.join(QUANTIZERS)}"
            )
        if not 0.0 < settings.ratio <= 1.0:
            raise ValueError(f"compression-ratio must be in (0, 1], got {settings.ratio}")
        if settings.method == "none" and settings.quantize == "none":
            return None
        return settings


def top_k(vector: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending, int32) of the ``k`` entries of largest magnitude."""
    if k >= vector.size:
        return np.arange(vector.size, dtype=np.int32)
    kept = np.argpartition(-np.abs(vector), k - 1)[:k]
    return np.sort(kept).astype(np.int32)


def quantize_int8(values: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """int8 levels round(v / s) and the float32 scale s = max|v| / 127 (0 for v = 0)."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    scale = np.float32(peak / INT8_LEVELS)
    if scale == 0:
        return np.zeros(values.shape, np.int8), scale
    levels = np.clip(np.rint(values / np.float64(scale)), -INT8_LEVELS, INT8_LEVELS)
    return levels.astype(np.int8), scale


def compress(vector: np.ndarray, settings: CompressionSettings) -> tuple[ArrayRecord, np.ndarray]:
    """Encode ``vector`` (v = e + Δ) for the wire.

    Returns
    -------
    tuple[ArrayRecord, np.ndarray]
        The compressed ArrayRecord and Δ̂, the float64 vector the server
        will decode from it.
    """
    size = vector.size
    indices = None
    if settings.method == "topk":
        indices = top_k(vector, max(1, round(settings.ratio * size)))
    kept = vector if indices is None else vector[indices]
    record = ArrayRecord({SIZE_KEY: Array(np.array([size], np.int64))})
    if indices is not None:
        record[INDICES_KEY] = Array(indices)
    scale = None
    if settings.quantize == "int8":
        values, scale = quantize_int8(kept)
        record[VALUES_KEY] = Array(values)
        record[SCALE_KEY] = Array(np.array([scale], np.float32))
    else:
        values = kept.astype(np.float32)
        record[VALUES_KEY] = Array(values)
    decoded = decode_delta(indices, values, None if scale is None else float(scale), size)
    return record, decoded.numpy().astype(np.float64)


def residual_key(config: dict[str, Any]) -> str:
    """Where the residual of the message's (virtual) client lives in ``context.state``."""
    if "client-id" in config:
        return f"{STATE_PREFIX}{int(config['client-id'])}.{RESIDUAL_KEY}"
    return RESIDUAL_KEY


def load_residual(context: Context, key: str, size: int) -> np.ndarray:
    """The stored residual e (zeros if none yet); ValueError if its length is not ``size``."""
    if key not in context.state:
        return np.zeros(size, np.float64)
    residual = context.state[key][RESIDUAL_ARRAY].numpy()  # type: ignore[index]
    if residual.shape != (size,):
        raise ValueError(
            f"state '{key}' holds a residual of {residual.size} coordinates, the update "
            f"has {size}"
        )
    return residual


def store_residual(context: Context, key: str, residual: np.ndarray) -> None:
    """Keep e for the client's next update."""
    context.state[key] = ArrayRecord({RESIDUAL_ARRAY: Array(np.ascontiguousarray(residual))})


def compression_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod compressing a TRAIN reply as its message's config asks.

    Install it as ``build_client_app(client_fn, train_mods=[compression_mod,
    ...])``: first in the list, so it runs outermost and compresses the
    update the other mods (an attack) leave.
    """
    if message.metadata.message_type != MessageType.TRAIN or not message.has_content():
        return call_next(message, context)
    configs = message.content.config_records
    config = dict(next(iter(configs.values()))) if configs else {}
    settings = CompressionSettings.from_config(config)
    sent = next(iter(message.content.array_records.values()), None)
    if settings is None or sent is None:
        return call_next(message, context)
    reply = call_next(message, context)
    if reply.has_error():
        return reply
    returned_key = next(iter(reply.content.array_records), None)
    if returned_key is None:
        return reply
    returned = reply.content.array_records[returned_key]
    if list(returned.keys()) != list(sent.keys()):
        raise ValueError(
            f"reply arrays {list(returned.keys())} differ from the model's {list(sent.keys())}"
        )
    delta = flat_delta(sent, returned)
    key = residual_key(config)
    vector = delta + load_residual(context, key, delta.size) if settings.error_feedback else delta
    record, decoded = compress(vector, settings)
    if settings.error_feedback:
        store_residual(context, key, vector - decoded)
    reply.content[returned_key] = record
    return reply
