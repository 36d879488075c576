"""Numbers of a report, all recomputed from the CSV rows."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .runs import Group, accuracy_rows

CURVE_POINTS = 200
"""Points of each group's virtual-time grid in :func:`group_curve`."""



def time_to_target(metrics: Sequence[dict[str, str]], target: float) -> tuple[float, int] | None:
    """(virtual_time, updates) of the first row whose accuracy ≥ ``target``, or None."""
    for row in accuracy_rows(metrics):
        if float(row["accuracy"]) >= target:
            return float(row["virtual_time"]), int(row["updates"])
    return None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); (nan, nan) for none."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def final_row(metrics: Sequence[dict[str, str]]) -> dict[str, str]:
    """The last row with an accuracy."""
    return accuracy_rows(metrics)[-1]


def step_curve(times: Sequence[float], values: Sequence[float], grid: Sequence[float]) -> list[float]:
    """The latest value at or before each grid time (nan before the first and after the last time)."""
    out, index = [], -1
    for t in grid:
        while index + 1 < len(times) and times[index + 1] <= t:
            index += 1
        out.append(values[index] if 0 <= index and t <= times[-1] else math.nan)
    return out


def group_curve(group: Group, points: int = CURVE_POINTS) -> tuple[list[float], list[float], list[float], list[float]]:
    """(grid, mean, min, max) of a group's accuracy against virtual time.

    Each run is a step function (its latest evaluation); at each grid time
    the mean, min and max are over the runs that have not ended yet.
    """
    curves = []
    for run in group.runs:
        rows = accuracy_rows(run.metrics)
        curves.append(([float(r["virtual_time"]) for r in rows], [float(r["accuracy"]) for r in rows]))
    end = max(c[0][-1] for c in curves)
    grid = [end * i / (points - 1) for i in range(points)]
    sampled = [step_curve(t, v, grid) for t, v in curves]
    mean, low, high = [], [], []
    for i in range(points):
        alive = [s[i] for s in sampled if not math.isnan(s[i])]
        mean.append(statistics.fmean(alive) if alive else math.nan)
        low.append(min(alive) if alive else math.nan)
        high.append(max(alive) if alive else math.nan)
    return grid, mean, low, high


@dataclass
class TargetStats:
    """Time and updates to one target over a group's seeds."""

    target: float
    reached: int
    runs: int
    time: tuple[float, float]
    updates: tuple[float, float]


def target_stats(group: Group, target: float) -> TargetStats:
    """:func:`time_to_target` of each run, mean ± std over the runs that reached it."""
    hits = [h for h in (time_to_target(r.metrics, target) for r in group.runs) if h is not None]
    return TargetStats(
        target,
        len(hits),
        len(group.runs),
        mean_std([h[0] for h in hits]),
        mean_std([float(h[1]) for h in hits]),
    )


def accepted_staleness(group: Group) -> list[int]:
    """Staleness of every accepted update of the group's runs."""
    return [int(r["staleness"]) for run in group.runs for r in run.clients if r["accepted"] == "True"]


def per_client_mean(rows: Sequence[dict[str, str]], column: str) -> dict[int, float]:
    """Mean of ``column`` per ``client_id`` (empty cells skipped)."""
    values: dict[int, list[float]] = {}
    for row in rows:
        if row.get(column, "") != "":
            values.setdefault(int(row["client_id"]), []).append(float(row[column]))
    return {c: statistics.fmean(v) for c, v in sorted(values.items())}


def last_client_accuracies(rows: Sequence[dict[str, str]]) -> list[float]:
    """Per-client accuracies of the last evaluated version in ``client_accuracy.csv`` rows."""
    last = max(int(r["version"]) for r in rows)
    return [float(r["accuracy"]) for r in rows if int(r["version"]) == last]


