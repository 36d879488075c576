"""fedstale's ClientApp: :class:`~fedstale.client.TorchClient` behind the bridge.

TRAIN messages pass through two client mods, outermost first:
:func:`~fedstale.client.compression.compression_mod` (compresses the update
when the message asks for it) and :func:`~fedstale.client.attacks.attack_mod`
(does nothing unless the simulation marked the message with an attack). An
attacker's update is therefore poisoned first and compressed last, as a real
malicious client running the same compressing software would send it.
"""

from fedstale.client import build_client_app, client_fn
from fedstale.client.attacks import attack_mod
from fedstale.client.compression import compression_mod

app = build_client_app(client_fn, train_mods=[compression_mod, attack_mod])
