"""A strategy's run state: what a resume point holds, taken and put back.

:func:`capture_run_state` is taken right after a new model version (and its
evaluation); :func:`restore_run_state` puts it back into a strategy whose
clients were just placed on the new run's SuperNodes. It holds the model and
its version, the base models of the tasks in flight and their dispatch
fields, the next task id, the selection policy's state, the clock, the
ledger's totals and the evaluator's last row, the pool's per-client books,
the state of trust, the adversary and central DP, the metrics of the
:class:`~flwr.serverapp.strategy.Result`, and the subclass's own state
(``extra_run_state``). The layout (key names included) is the one resume
points have always had (:data:`fedstale.resume.RESUME_FORMAT` 1).
See :mod:`fedstale.resume` for how a run is resumed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flwr.app import MetricRecord

from ..component_state import capture, restore

if TYPE_CHECKING:
    from .base import AsyncStrategy

DISPATCH_FIELDS = (
    "task_id",
    "client_id",
    "index",
    "dispatch_version",
    "dispatch_time",
    "num_examples",
    "epochs",
    "min_epochs",
    "bytes_down",
    "lr",
    "seed",
    "version_time",
)
"""What a task in flight needs to be dispatched again on resume."""

EVALUATOR_COUNTERS = {
    "_last_eval_version": "last_version",
    "_last_eval_updates": "last_updates",
    "_last_accuracy": "last_accuracy",
    "_targets_reached": "reached",
}
"""Saved ``counters`` kept by the evaluator (the others are the ledger's, ``_`` + name)."""

RESULT_METRICS = (
    "train_metrics_clientapp",
    "evaluate_metrics_clientapp",
    "evaluate_metrics_serverapp",
)
"""The :class:`~flwr.serverapp.strategy.Result` dicts a resumed run continues."""

COMPONENTS = ("trust", "adversary", "central_dp")
"""The strategy's stateful components saved with :func:`fedstale.component_state.capture`."""


def capture_run_state(strategy: AsyncStrategy) -> dict[str, Any]:
    """Everything needed to continue ``strategy``'s run from its current version."""
    bases = {t.dispatch_version for t in strategy.inflight}
    evaluator = strategy.evaluator
    counters = {f"_{name}": value for name, value in strategy.ledger.totals().items()}
    counters.update({key: getattr(evaluator, name) for key, name in EVALUATOR_COUNTERS.items()})
    return {
        "strategy": type(strategy).__name__,
        "version": strategy.version,
        "model": strategy.model,
        "bases": strategy.snapshots.bases(bases),
        "inflight": strategy.inflight.fields(DISPATCH_FIELDS),
        "next_task_id": strategy.inflight.next_task_id,
        "rng": strategy.pool.policy.run_state(),
        "clock": {
            "now": strategy.clock.now,
            "wall": strategy.clock.wall_elapsed(),
            "version_made_at": strategy.global_model.made_at,
        },
        "counters": counters,
        "clients": {f"_{name}": value for name, value in strategy.pool.books().items()},
        "components": {name: capture(getattr(strategy, name)) for name in COMPONENTS},
        "result": {
            name: {v: dict(m) for v, m in getattr(strategy.result, name).items()}
            for name in RESULT_METRICS
        },
        "extra": strategy.extra_run_state(),
    }


def restore_run_state(strategy: AsyncStrategy, state: dict[str, Any]) -> list[dict[str, Any]]:
    """Put ``state`` (a :func:`capture_run_state` of this experiment) back into ``strategy``.

    Returns
    -------
    list[dict[str, Any]]
        The tasks that were in flight (their :data:`DISPATCH_FIELDS`), to
        dispatch again.

    Raises
    ------
    ValueError
        If another strategy class wrote the state.
    """
    if state["strategy"] != type(strategy).__name__:
        raise ValueError(
            f"the resume point was written by {state['strategy']}, not {type(strategy).__name__}"
        )
    clock = state["clock"]
    made_at = clock.get("version_made_at", clock["now"])  # absent from older resume points
    strategy.global_model.restore(int(state["version"]), state["model"], made_at)
    strategy.snapshots.load(state["bases"], strategy.version, strategy.model)
    strategy.inflight.next_task_id = int(state["next_task_id"])
    strategy.pool.policy.load_run_state(state["rng"])
    strategy.clock.resume(state["clock"]["now"], state["clock"]["wall"])
    totals = {}
    for key, value in state["counters"].items():
        if key in EVALUATOR_COUNTERS:
            setattr(strategy.evaluator, EVALUATOR_COUNTERS[key], value)
        else:
            totals[key[1:]] = value
    strategy.ledger.load_totals(totals)
    strategy.pool.load_books({key[1:]: value for key, value in state["clients"].items()})
    for name in COMPONENTS:
        restore(getattr(strategy, name), state["components"][name])
    for name, metrics in state["result"].items():
        getattr(strategy.result, name).update(
            {int(v): MetricRecord(m) for v, m in metrics.items()}
        )
    strategy.load_extra_run_state(state["extra"])
    return state["inflight"]
