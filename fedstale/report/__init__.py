"""Markdown reports with figures, recomputed from run folders' CSV files.

``build_report(dirs, out)`` reads run folders (``metrics.csv``,
``clients.csv``, ``config.yaml``) and sweep folders (their cells, and
``sweep.yaml`` for the cells' labels), groups runs whose configurations
differ only in ``run.seed``/``data.seed`` (a group is one setting over
seeds), and writes ``out/report.md`` with PNG figures beside it:

- ``accuracy_vs_time.png``: each group's mean test accuracy against virtual
  time, with its min–max band over seeds (see :func:`group_curve`);
- ``time_to_target.png`` and a table: virtual time and client updates until
  the first evaluation at or above each target accuracy
  (:func:`time_to_target`), mean ± std over the seeds that reached it;
- ``staleness.png``: the staleness distribution of accepted updates;
- ``participation.png``: updates per client per virtual-time bin (a heatmap
  per group, its first seed);
- ``client_times.png``: each client's mean ``virtual_duration`` and
  ``fit_seconds``;
- fairness across clients from ``client_accuracy.csv`` where runs have it
  (:mod:`fedstale.fairness`), else a note;
- where runs have ``client_acc_worst10`` (``evaluation.fairness``), a table
  of each group's virtual time to each target beside its final accuracy and
  worst-10% client accuracy;
- for a sweep with two axes (besides seeds), matrices of final accuracy, of
  virtual time to each target (and of the backdoor's attack success and the
  final worst-10% client accuracy, when measured).

Standard deviations are over seeds (``statistics.stdev``, n − 1; 0 for one seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .figures import (
    accuracy_section,
    client_time_section,
    participation_section,
    pyplot,
    staleness_section,
    target_section,
)
from .numbers import (
    accepted_staleness,
    final_row,
    group_curve,
    last_client_accuracies,
    mean_std,
    per_client_mean,
    step_curve,
    target_stats,
    time_to_target,
)
from .runs import (
    Group,
    ReportError,
    RunData,
    accuracy_rows,
    collect_runs,
    group_runs,
    load_run,
)
from .tables import extra_table, fairness_section, matrix, runs_table, sources, speed_fairness_table

__all__ = [
    "Group", "ReportError", "RunData", "accepted_staleness", "accuracy_rows", "build_report",
    "collect_runs", "final_row", "group_curve", "group_runs", "last_client_accuracies", "load_run",
    "mean_std", "per_client_mean", "step_curve", "target_stats", "time_to_target",
]


def build_report(
    dirs: Sequence[Path],
    out: Path,
    targets: Sequence[float] = (0.8, 0.9),
    title: str | None = None,
) -> Path:
    """Write ``out/report.md`` and its figures for the runs in ``dirs``; return the markdown path.

    Raises
    ------
    ReportError
        If a target is not in (0, 1] or there is no run to report on.
    """
    bad = [t for t in targets if not 0 < t <= 1]
    if bad:
        raise ReportError(f"--targets: accuracies must be in (0, 1], got {bad}")
    notes: list[str] = []
    groups = group_runs(collect_runs(dirs, notes))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    title = title or "Report: " + ", ".join(Path(d).resolve().name for d in dirs)
    lines = [f"# {title}", "", sources(dirs, groups), ""] + [n + "\n" for n in notes]
    lines += runs_table(groups)
    lines += extra_table(groups)
    lines += matrix(dirs, groups, targets)
    lines += speed_fairness_table(groups, targets)
    lines += accuracy_section(groups, out, plt)
    lines += target_section(groups, targets, out, plt)
    lines += staleness_section(groups, out, plt)
    lines += participation_section(groups, out, plt)
    lines += client_time_section(groups, out, plt)
    lines += fairness_section(groups)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


