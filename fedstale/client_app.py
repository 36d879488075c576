"""fedstale's ClientApp: :class:`~fedstale.client.TorchClient` behind the bridge.

TRAIN messages pass through these mods, outermost first (each does nothing
unless the message's config asks for it):

1. :func:`~fedstale.client.compression.compression_mod`: top-k / int8
   compression with error feedback (``compression``);
2. :func:`~fedstale.client.secagg.secagg_mod`: quantise and mask the
   update for secure aggregation (``privacy.secagg``);
3. :func:`~fedstale.client.clipping.central_clipping_mod`: clip the update
   for central DP (``privacy.central.clipping: client``);
4. :func:`~fedstale.client.attacks.attack_mod`: the simulation's attacks.

An attacker's update is therefore poisoned first and clipped, masked or
compressed last, as a real malicious client running the same software
would send it.
"""

from fedstale.client import build_client_app, client_fn
from fedstale.client.attacks import attack_mod
from fedstale.client.clipping import central_clipping_mod
from fedstale.client.compression import compression_mod
from fedstale.client.secagg import secagg_mod

app = build_client_app(
    client_fn, train_mods=[compression_mod, secagg_mod, central_clipping_mod, attack_mod]
)
