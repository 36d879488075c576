"""Client-side clipping for central DP: Flower's ``fixedclipping_mod``, when asked.

With ``privacy.central.clipping: client`` the server adds ``clipping_norm``
to every TRAIN config and the ClientApp clips its update
Δ = x_local − x_received to that L2 norm before replying, with Flower's own
:func:`flwr.clientapp.mod.fixedclipping_mod` (it clips relative to the model
in the incoming message, so it stays right for stale replies). Flower's mod
refuses messages without ``clipping_norm``; :func:`central_clipping_mod`
only calls it when the key is there, so one ClientApp serves runs with and
without central DP. The server clips again (clipping is idempotent), so a
client that skips this step gains nothing.
"""

from __future__ import annotations

from flwr.app import Context, Message, MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM


def central_clipping_mod(
    message: Message, context: Context, call_next: ClientAppCallable
) -> Message:
    """Run Flower's ``fixedclipping_mod`` on TRAIN messages that carry ``clipping_norm``."""
    if message.metadata.message_type != MessageType.TRAIN or not message.has_content():
        return call_next(message, context)
    configs = message.content.config_records
    if not any(KEY_CLIPPING_NORM in record for record in configs.values()):
        return call_next(message, context)
    return fixedclipping_mod(message, context, call_next)
