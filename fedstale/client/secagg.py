"""The client side of simulated secure aggregation, as a Flower client mod.

The server (:class:`fedstale.strategies.SecAggFedBuff`) adds to each TRAIN
config the task's ``secagg-group``, ``secagg-index``, ``secagg-size``,
``secagg-bits`` and ``secagg-seed``. :func:`secagg_mod` lets the client
train, then replaces the reply's ArrayRecord by one uint32 array
(:data:`~fedstale.aggregation.secagg.MASKED_KEY`): the update
Δ = x_local − x_received (all arrays flattened in record order, as the
server's :class:`~fedstale.aggregation.vectors.ModelCodec` does), quantised
to fixed point and masked with the member's pairwise masks
(:func:`~fedstale.aggregation.secagg.mask_update`). The plaintext update
never leaves the ClientApp. An update too large for the fixed-point range
raises, which the ClientApp turns into an error reply (a dropped member).
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from ..aggregation.secagg import MASKED_KEY, mask_update
from .updates import flat_delta


def secagg_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mask the update of TRAIN messages whose config has ``secagg-group``."""
    if message.metadata.message_type != MessageType.TRAIN or not message.has_content():
        return call_next(message, context)
    config = next(iter(message.content.config_records.values()), None)
    if config is None or "secagg-group" not in config:
        return call_next(message, context)
    sent = next(iter(message.content.array_records.values()))
    reply = call_next(message, context)
    if reply.has_error():
        return reply
    key, returned = next(iter(reply.content.array_records.items()))
    masked = mask_update(
        flat_delta(sent, returned),
        seed=int(config["secagg-seed"]),  # type: ignore[arg-type]
        group=int(config["secagg-group"]),  # type: ignore[arg-type]
        index=int(config["secagg-index"]),  # type: ignore[arg-type]
        group_size=int(config["secagg-size"]),  # type: ignore[arg-type]
        precision_bits=int(config["secagg-bits"]),  # type: ignore[arg-type]
    )
    reply.content[key] = ArrayRecord({MASKED_KEY: Array(masked)})
    return reply
