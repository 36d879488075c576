"""fedstale's ClientApp: :class:`~fedstale.client.TorchClient` behind the bridge."""

from fedstale.client import build_client_app, client_fn

app = build_client_app(client_fn)
