"""The run state of stateful components (trust, filters, reducers, ...).

Resuming a run (:mod:`fedstale.resume`) saves and restores the state of
every stateful part of the server: the trust tracker, per-update filters,
reducers and pipelines, central DP and the simulated adversary.
:func:`capture` and :func:`restore` are the one protocol they share. This
module imports nothing from fedstale, so aggregation code and strategies can
use it without depending on the resume machinery (and, through it, on the
configuration).
"""

from __future__ import annotations

import copy
from typing import Any


def capture(component: Any) -> Any:
    """The run state of a stateful component (trust, a filter, a reducer...).

    A component either has ``run_state()``/``load_run_state()`` methods, or
    names the attributes that hold its run state in ``run_state_attributes``
    (the ones its ``reset()`` clears); they are deep-copied. None stays None.
    """
    if component is None:
        return None
    custom = getattr(component, "run_state", None)
    if callable(custom):
        return custom()
    names = getattr(type(component), "run_state_attributes", ())
    return {name: copy.deepcopy(getattr(component, name)) for name in names}


def restore(component: Any, state: Any) -> None:
    """Put back what :func:`capture` returned."""
    if component is None or state is None:
        return
    custom = getattr(component, "load_run_state", None)
    if callable(custom):
        custom(state)
        return
    for name, value in state.items():
        setattr(component, name, copy.deepcopy(value))
