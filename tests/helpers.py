"""Helpers for tests: shipped configs with overrides, in-process runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedstale.config import Config, load_config
from fedstale.simulation.local_grid import run_in_process
from fedstale.strategies import MemoryRecorder

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

SEED = int(os.environ.get("FEDSTALE_TEST_SEED", "0"))
"""The seed of the run (``run.seed``) and of the data split (``data.seed``)
in tests; ``simulations/seed_table.py`` sets it to measure each learned
quantity over several seeds. The shipped configs use 0."""

SEED_OVERRIDES: dict[str, int] = {"run.seed": SEED, "data.seed": SEED} if SEED else {}
"""Dotted overrides that apply :data:`SEED` (none for seed 0)."""


PROBE_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "probe"
version = "{version}"
description = "fedstale superexec test app"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["probe"]

[tool.flwr.app]
publisher = "tests"

[tool.flwr.app.components]
serverapp = "probe.server:app"
clientapp = "probe.client:app"

[tool.flwr.app.config]
plan = "count"
out = ""
"""
"""The ``pyproject.toml`` of a minimal Flower app, ``probe`` (``probe.server:app``,
``probe.client:app``); ``{version}`` is its version (a FAB of its own per version)."""


TINY_OVERRIDES: dict[str, Any] = {
    "data.num_clients": 6,
    "strategy.concurrency": 3,
    "strategy.buffer_size": 2,
    "stop.num_updates": 6,
    "evaluation.every": 3,
    "output.plots": False,
}
"""A run of a few seconds: 6 clients, 3 at once, buffers of 2, 6 versions."""


def config(name: str = "default", **overrides: Any) -> Config:
    """A shipped config with dotted-name overrides (``a__b`` means ``a.b``),
    run with :data:`SEED` unless the overrides name ``run.seed``/``data.seed``."""
    flat = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_config(CONFIGS / f"{name}.yaml", {**SEED_OVERRIDES, **flat})


def run(cfg: Config, **grid_options: Any):
    """Run ``cfg`` in process; return (result, strategy, recorder)."""
    recorder = MemoryRecorder()
    result, strategy = run_in_process(cfg, recorder, **grid_options)
    return result, strategy, recorder
