"""Client side: the NumPyClient, its training loops and the ClientApp bridge."""

from .bridge import build_client_app, client_context, store_client_state
from .torch_client import TorchClient, client_fn
from .training import TrainResult, TrainSettings, evaluate, pick_device, train

__all__ = [
    "TorchClient",
    "TrainResult",
    "TrainSettings",
    "build_client_app",
    "client_context",
    "client_fn",
    "evaluate",
    "pick_device",
    "store_client_state",
    "train",
]
