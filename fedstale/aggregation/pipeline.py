"""Compose pre-aggregators and a reducer from a YAML string.

``strategy.aggregator`` names the stages separated by ``>``, the last one a
reducer: ``mean``, ``median``, ``clip>nnm>trimmed_mean``, ... Their
parameters come from ``strategy.robust`` (one flat set of names, mapped to
each stage's constructor below).
"""

from __future__ import annotations

from typing import Any

import torch

from ..component_state import capture, restore
from .preaggregators import PREAGGREGATORS, PreAggregator
from .reducers import REDUCERS, Reducer

PARAMETERS: dict[str, dict[str, str]] = {
    "mean": {},
    "median": {},
    "trimmed_mean": {"beta": "beta"},
    "krum": {"f": "f"},
    "multi_krum": {"f": "f", "multikrum_m": "m"},
    "bulyan": {"f": "f"},
    "geometric_median": {"gm_nu": "nu", "gm_iterations": "iterations"},
    "centered_clipping": {"cc_tau": "tau", "cc_iterations": "iterations"},
    "clip": {"clip_norm": "max_norm"},
    "nnm": {"f": "f"},
    "bucketing": {"bucket_size": "bucket_size", "seed": "seed"},
}
"""For each stage, which ``strategy.robust`` parameter feeds which argument."""


def parse_aggregator(spec: str) -> tuple[list[str], str]:
    """``"clip>nnm>median"`` → (["clip", "nnm"], "median"), checking the names."""
    stages = [part.strip() for part in spec.split(">")]
    if not all(stages):
        raise ValueError(f"'{spec}' has an empty stage; write e.g. clip>nnm>trimmed_mean")
    *pre, last = stages
    for name in pre:
        if name not in PREAGGREGATORS:
            raise ValueError(
                f"'{name}' is not a pre-aggregator; accepted before '>': "
                f"{', '.join(PREAGGREGATORS)}"
            )
    if last not in REDUCERS:
        raise ValueError(
            f"'{last}' is not a reducer; the last stage is one of {', '.join(REDUCERS)}"
        )
    return pre, last


def _build(name: str, registry: dict[str, type], params: dict[str, Any]) -> Any:
    kwargs = {arg: params[key] for key, arg in PARAMETERS[name].items() if key in params}
    return registry[name](**kwargs)


class Pipeline(Reducer):
    """Pre-aggregators applied in order, then a reducer."""

    def __init__(self, stages: list[PreAggregator], reducer: Reducer) -> None:
        self.stages = stages
        self.reducer = reducer
        self.name = ">".join([s.name for s in stages] + [reducer.name])

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Drop weight-0 rows, run the stages, then the reducer.

        ``updates`` belongs to the pipeline: a stage may overwrite it
        (``clip`` rescales in place), so pass a copy if you need it after.
        It is copied only when rows must be dropped.
        """
        keep = weights > 0
        if not bool(keep.all()):
            updates, weights = updates[keep], weights[keep]
        if len(updates) < self.required_updates():
            raise ValueError(
                f"{self.name} needs at least {self.required_updates()} updates, got {len(updates)}"
            )
        for stage in self.stages:
            updates, weights = stage(updates, weights)
        return self.reducer(updates, weights)

    def reduce(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Same as calling the pipeline."""
        return self(updates, weights)

    def required_updates(self) -> int:
        """The most any stage needs (bucketing divides what reaches the reducer)."""
        need = self.reducer.required_updates()
        for stage in reversed(self.stages):
            if getattr(stage, "bucket_size", None):
                need *= stage.bucket_size  # type: ignore[attr-defined]
            need = max(need, stage.required_updates())
        return need

    def reset(self) -> None:
        """Reset every stage."""
        for stage in self.stages:
            stage.reset()
        self.reducer.reset()

    def run_state(self) -> list[Any]:
        """The run state of every stage, then of the reducer (for resume)."""
        return [capture(part) for part in [*self.stages, self.reducer]]

    def load_run_state(self, state: list[Any]) -> None:
        """Put back what :meth:`run_state` returned."""
        for part, part_state in zip([*self.stages, self.reducer], state):
            restore(part, part_state)


def make_aggregator(spec: str, **params: Any) -> Reducer:
    """The reducer (or pipeline) named by ``spec`` with the given parameters.

    ``params`` uses ``strategy.robust``'s names (``f``, ``beta``,
    ``multikrum_m``, ``clip_norm``, ``cc_tau``, ``cc_iterations``,
    ``gm_nu``, ``gm_iterations``, ``bucket_size``) plus ``seed``; each stage
    takes the ones it uses.
    """
    pre, last = parse_aggregator(spec)
    reducer = _build(last, REDUCERS, params)
    if not pre:
        return reducer
    return Pipeline([_build(name, PREAGGREGATORS, params) for name in pre], reducer)
