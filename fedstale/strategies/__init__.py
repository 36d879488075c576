"""fedstale's strategies: Flower ``Strategy`` subclasses on an async event loop."""

from .base import AsyncStrategy
from .dynamic import DynamicStaleness
from .failfast import RunAborted
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .pool import SelectionPolicy
from .recorder import MemoryRecorder, NullRecorder, Recorder
from .secagg_fedbuff import SecAggFedBuff
from .selection import (
    SELECTION_POLICIES,
    FastestFirst,
    LeastParticipated,
    Oort,
    RandomSelection,
    RoundRobin,
    make_selection,
)
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
    "SELECTION_POLICIES",
    "STRATEGIES",
    "AsyncStrategy",
    "ClientUpdate",
    "DynamicStaleness",
    "FastestFirst",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "LeastParticipated",
    "MemoryRecorder",
    "NullRecorder",
    "Oort",
    "RandomSelection",
    "Recorder",
    "RoundRobin",
    "RunAborted",
    "SecAggFedBuff",
    "SelectionPolicy",
    "Task",
    "make_selection",
]
