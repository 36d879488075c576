"""What ``fedstale superexec`` runs with: its options and what a worker preloads."""

# pylint: disable=import-outside-toplevel,broad-exception-caught

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


WORKER_SCRIPT = Path(__file__).with_name("worker.py")
"""Run as a script, so that the worker imports nothing of fedstale itself."""

DEFAULT_PRELOAD = (
    "numpy",
    "torch",
    "torch.optim",
    "torch.nn.functional",
    "flwr.clientapp",
    "flwr.supernode.runtime.run_clientapp",
    "sklearn.datasets",
    "flwr_datasets.partitioner",
)
"""What a worker imports before it knows its FAB: torch, Flower's ClientApp
side, and what fedstale's ClientApp imports lazily on its first task
(scikit-learn's datasets, flwr-datasets' partitioners). Missing ones are
skipped. A replacement worker also imports everything its predecessor
imported while serving tasks."""


@dataclass
class Options:  # pylint: disable=too-many-instance-attributes
    """What ``fedstale superexec`` was started with (see :func:`fedstale.superexec.build_parser`)."""

    runtime_api_address: str
    insecure: bool = False
    root_certificates: str | None = None
    parent_pid: int | None = None
    superexec_auth_secret: bytes | None = None
    health_server_address: str | None = None
    poll_interval: float = 0.05
    idle_poll_interval: float = 0.5
    fast_window: float = 10.0
    task_timeout: float = 3600.0
    worker_start_timeout: float = 300.0
    max_workers: int = 2
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    task_log: str | None = None


