"""Helpers for tests: shipped configs with overrides, in-process runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedstale.config import Config, load_config
from fedstale.simulation.local_grid import run_in_process
from fedstale.strategies import MemoryRecorder

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def config(name: str = "default", **overrides: Any) -> Config:
    """A shipped config with dotted-name overrides (``a__b`` means ``a.b``)."""
    flat = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_config(CONFIGS / f"{name}.yaml", flat)


def run(cfg: Config, **grid_options: Any):
    """Run ``cfg`` in process; return (result, strategy, recorder)."""
    recorder = MemoryRecorder()
    result, strategy = run_in_process(cfg, recorder, **grid_options)
    return result, strategy, recorder
