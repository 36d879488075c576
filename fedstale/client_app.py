"""fedstale's ClientApp: :class:`~fedstale.client.TorchClient` behind the bridge.

TRAIN messages pass through these mods, outermost first (each does nothing
unless the message's config asks for it):

1. :func:`~fedstale.client.clipping.central_clipping_mod`: clip the update
   for central DP (``privacy.central.clipping: client``);
2. :func:`~fedstale.client.attacks.attack_mod`: the simulation's attacks,
   which therefore act on the raw update.
"""

from fedstale.client import build_client_app, client_fn
from fedstale.client.attacks import attack_mod
from fedstale.client.clipping import central_clipping_mod

app = build_client_app(client_fn, train_mods=[central_clipping_mod, attack_mod])
