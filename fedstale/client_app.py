"""fedstale's ClientApp: :class:`~fedstale.client.TorchClient` behind the bridge.

TRAIN messages pass through :func:`~fedstale.client.attacks.attack_mod`, which
does nothing unless the simulation marked the message with an attack.
"""

from fedstale.client import build_client_app, client_fn
from fedstale.client.attacks import attack_mod

app = build_client_app(client_fn, train_mods=[attack_mod])
