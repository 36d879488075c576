"""fedstale's strategies: Flower ``Strategy`` subclasses on an async event loop."""

from .base import AsyncStrategy
from .dynamic import DynamicStaleness
from .failfast import RunAborted
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .pool import RandomSelection, SelectionPolicy
from .recorder import MemoryRecorder, NullRecorder, Recorder
from .secagg_fedbuff import SecAggFedBuff
from .task import ClientUpdate, Task

STRATEGIES: dict[str, type[AsyncStrategy]] = {
    "fedasync": FedAsync,
    "fedbuff": FedBuff,
    "fedavg": FedAvg,
    "dynamic": DynamicStaleness,
}
"""Registry keyed by the names used in YAML (``strategy.name``).
``fedbuff`` with ``privacy.secagg.enabled`` runs :class:`SecAggFedBuff`."""

__all__ = [
    "STRATEGIES",
    "AsyncStrategy",
    "ClientUpdate",
    "DynamicStaleness",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "MemoryRecorder",
    "NullRecorder",
    "RandomSelection",
    "Recorder",
    "RunAborted",
    "SecAggFedBuff",
    "SelectionPolicy",
    "Task",
]
