"""Fairness across clients: a held-out split per client and a summary of accuracies.

Global test accuracy says how good the model is on average; federated
learning with skewed clients also asks *for whom*. Two pure pieces:

- :func:`held_out_split`: each client's local examples split once, seeded by
  ``(seed, client_id)``, into a training part and a held-out part on which
  that client's accuracy is measured. The split depends on nothing else (not
  on the order clients are seen, nor on the worker), so every evaluation of
  a client uses the same examples.
- :func:`summarize`: the mean, standard deviation, mean of the worst 10 %
  and Jain's fairness index of per-client accuracies.

Per-client accuracies are read from ``client_accuracy.csv``
(:data:`CLIENT_ACCURACY_COLUMNS`, one row per client per evaluation) when a
run has one; :func:`fedstale.report.build_report` summarizes the last
evaluation of each run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLIENT_ACCURACY_FILE = "client_accuracy.csv"
"""A run folder's per-client accuracies (absent until the event loop writes them)."""

CLIENT_ACCURACY_COLUMNS = ("version", "virtual_time", "client_id", "num_examples", "accuracy")
"""Columns of ``client_accuracy.csv``: the model ``version`` evaluated at
``virtual_time``, on ``num_examples`` held-out examples of ``client_id``."""

WORST_FRACTION = 0.1
"""Share of the clients whose mean accuracy is reported as the worst group."""

TARGETS_FILE = "targets.csv"
"""A run folder's first reach of each ``evaluation.targets`` accuracy (absent without targets)."""

TARGETS_COLUMNS = ("target", "version", "virtual_time", "updates")
"""Columns of ``targets.csv``: the first evaluation (model ``version``, at
``virtual_time`` after ``updates`` received replies) whose centralized
``accuracy`` reached ``target``; one row per target reached, in order."""

SUMMARY_COLUMNS = ("client_acc_mean", "client_acc_std", "client_acc_worst10", "client_acc_jain")
"""The ``metrics.csv`` columns :func:`summary_columns` fills (empty when fairness is off)."""

_SPLIT_STREAM = 3
"""Stream id of the split's generator (delays use 1 and 2 with the same seed)."""


def held_out_split(
    num_examples: int, fraction: float, seed: int, client_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split a client's examples once into (training, held-out) indices.

    Parameters
    ----------
    num_examples : int
        Number of examples of the client (indices ``0 .. num_examples - 1``).
    fraction : float
        Share held out, in (0, 1). The held-out part has
        ``round(fraction * num_examples)`` examples, at least 1 and at most
        ``num_examples - 1`` (both parts are never empty).
    seed : int
        Seed of the split (e.g. ``data.seed``).
    client_id : int
        The client; its generator is seeded by ``(seed, 3, client_id)``.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        Sorted training indices and sorted held-out indices; together they
        are a partition of ``range(num_examples)``.

    Raises
    ------
    ValueError
        If ``num_examples < 2`` or ``fraction`` is not in (0, 1).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: must be in (0, 1), got {fraction!r}")
    if num_examples < 2:
        raise ValueError(
            f"num_examples: a held-out split needs at least 2 examples, got {num_examples}"
        )
    held = min(max(int(round(fraction * num_examples)), 1), num_examples - 1)
    order = np.random.default_rng([seed, _SPLIT_STREAM, client_id]).permutation(num_examples)
    return np.sort(order[held:]), np.sort(order[:held])


@dataclass(frozen=True)
class FairnessSummary:
    """Per-client accuracies in four numbers.

    Attributes
    ----------
    clients : int
        Number of clients summarized.
    mean : float
        Mean accuracy.
    std : float
        Population standard deviation (``ddof=0``).
    worst_mean : float
        Mean accuracy of the worst ``ceil(WORST_FRACTION * clients)`` clients.
    jain : float
        Jain's index ``(Σx)² / (n·Σx²)``: 1 when every client has the same
        accuracy, ``1/n`` when one client has it all (1 when all are 0).
    """

    clients: int
    mean: float
    std: float
    worst_mean: float
    jain: float


def worst_mean(values: Sequence[float], fraction: float = WORST_FRACTION) -> float:
    """Mean of the lowest ``ceil(fraction * len(values))`` values (at least one)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("values: no per-client accuracy to summarize")
    count = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return sum(ordered[:count]) / count


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(Σx)² / (n·Σx²)`` of non-negative values (1 if all are 0)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("values: no per-client accuracy to summarize")
    if min(xs) < 0:
        raise ValueError(f"values: Jain's index needs non-negative values, got {min(xs)}")
    squares = sum(x * x for x in xs)
    if squares == 0:
        return 1.0
    return sum(xs) ** 2 / (len(xs) * squares)


def summarize(values: Sequence[float], fraction: float = WORST_FRACTION) -> FairnessSummary:
    """Mean, standard deviation, worst-``fraction`` mean and Jain's index of ``values``.

    Raises
    ------
    ValueError
        If ``values`` is empty or holds a negative value.
    """
    xs = [float(v) for v in values]
    jain = jain_index(xs)
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    return FairnessSummary(len(xs), mean, std, worst_mean(xs, fraction), jain)


def summary_columns(values: Sequence[float]) -> dict[str, float]:
    """The :data:`SUMMARY_COLUMNS` of a ``metrics.csv`` row from per-client accuracies."""
    summary = summarize(values)
    return dict(
        zip(SUMMARY_COLUMNS, (summary.mean, summary.std, summary.worst_mean, summary.jain))
    )


def parse_targets(text: str) -> tuple[float, ...]:
    """``evaluation.targets`` (``"0.8,0.9"``) as sorted, distinct accuracies in (0, 1].

    Raises
    ------
    ValueError
        If an item is not a number or not in (0, 1].
    """
    try:
        values = [float(item) for item in str(text).split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated accuracies, e.g. 0.8,0.9, got {text!r}") from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise ValueError(f"every target must be in (0, 1], got {bad}")
    return tuple(sorted(set(values)))
