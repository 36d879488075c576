"""Sweeps: many experiments from one spec, run in parallel, resumable.

A sweep spec is a YAML file::

    name: delays                    # the sweep's folder name (default: the file's stem)
    config: configs/default.yaml    # base experiment
    overrides:                      # applied to every cell
      stop.num_updates: 100
    cells:                          # explicit cells (an axis; optional)
      - {name: fedbuff}
      - {name: fedasync, config: configs/fedasync.yaml, stop.num_updates: 500}
    grid:                           # axes, crossed with each other and with the cells
      strategy.buffer_size: [5, 10]           # a field and its values
      delay:                                  # or named sets of overrides
        - {name: constant, delay.speed.distribution: constant, delay.speed.value: 0.02}
        - {name: pareto}
    seeds: [0, 1, 2, 3, 4]          # sets run.seed (and data.seed with seed_data: true)
    seed_data: false
    engine: local                   # local (in process, default) or flower (flwr run)

Every cell is one run folder ``<out>/<cell name>/``; the name is made of the
labels of the axes that vary (``fedbuff_buffer_size-5_delay-constant_seed-0``),
a label being the ``name`` of a set of overrides or the field's value.
``config`` and ``name`` are the only keys of a cell or a set of overrides
that are not config fields. Later layers win: base config < ``overrides`` <
cell < grid axes < seed; two axes setting the same field is an error.

:func:`load_spec` and :func:`plan_sweep` check everything before any run
starts (unknown keys, and :func:`fedstale.config.load_config` on every
cell), raising one :class:`SweepError` listing each problem. :func:`run_sweep`
then skips finished cells (``model.pt`` and at least one ``metrics.csv``
row), clears and reruns interrupted ones, and runs the rest as Ray tasks
(one CPU and one torch thread each; ``RAY_ADDRESS`` names a cluster,
otherwise a private local Ray instance of ``workers`` CPUs is started and
stopped, by PID, at the end). A failed cell is reported and the sweep goes
on. ``<out>/sweep.yaml`` lists the axes and cells for :mod:`fedstale.report`.
"""

from __future__ import annotations

from .execute import CellOutcome, Progress, SweepResult, execute_cell, run_sweep
from .plan import (
    Cell,
    config_differences,
    is_finished,
    plan_sweep,
    read_manifest,
    split_cells,
    write_manifest,
)
from .spec import (
    ERROR_FILE,
    IGNORED_ON_COMPARE,
    MANIFEST,
    RESERVED_KEYS,
    SPEC_KEYS,
    SWEEP_ID_VARIABLE,
    Axis,
    SweepError,
    SweepSpec,
    load_spec,
    safe_name,
)

__all__ = [
    "Axis", "Cell", "CellOutcome", "ERROR_FILE", "IGNORED_ON_COMPARE", "MANIFEST", "Progress",
    "RESERVED_KEYS", "SPEC_KEYS", "SWEEP_ID_VARIABLE", "SweepError", "SweepResult", "SweepSpec",
    "config_differences", "execute_cell", "is_finished", "load_spec", "plan_sweep", "read_manifest",
    "run_sweep", "safe_name", "split_cells", "write_manifest",
]
