"""The report's markdown tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from ..fairness import CLIENT_ACCURACY_FILE, summarize
from ..sweep import read_manifest
from .numbers import final_row, last_client_accuracies, mean_std, target_stats
from .runs import Group


def pm(stats: tuple[float, float], digits: int = 1) -> str:
    mean, std = stats
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def sources(dirs: Sequence[Path], groups: list[Group]) -> str:
    runs = sum(len(g.runs) for g in groups)
    unfinished = [r.path.name for g in groups for r in g.runs if not r.finished]
    text = (
        f"{runs} runs in {len(groups)} groups (runs whose configurations differ only in "
        f"run.seed/data.seed form a group), from " + ", ".join(f"`{d}`" for d in dirs) + ". "
        "Every number is recomputed from the runs' `metrics.csv` and `clients.csv`; "
        "± is the standard deviation over seeds."
    )
    if unfinished:
        text += f" Unfinished runs (no model.pt), included as far as they got: {', '.join(unfinished)}."
    return text


def table_head(title: str, text: str, columns: Sequence[str]) -> list[str]:
    """A section's heading, its text, and the head of its table."""
    head = [f"## {title}", ""] + ([text, ""] if text else [])
    return head + ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def runs_table(groups: list[Group]) -> list[str]:
    lines = table_head(
        "Runs", "",
        ("group", "seeds", "strategy", "final accuracy (%)", "virtual time at end (s)", "updates at end"),
    )
    for g in groups:
        finals = [final_row(r.metrics) for r in g.runs]
        seeds = ",".join(str(r.config.get("run.seed", "?")) for r in g.runs)
        cfg = g.runs[0].config
        mode = cfg.get("strategy.mode", "?")
        if mode == "auto":
            mode = "sync" if cfg.get("strategy.name") == "fedavg" else "async"
        strategy = f"{cfg.get('strategy.name', '?')} ({mode})"
        lines.append(
            f"| {g.label} | {seeds} | {strategy} | "
            f"{pm(mean_std([100 * float(f['accuracy']) for f in finals]))} | "
            f"{pm(mean_std([float(f['virtual_time']) for f in finals]))} | "
            f"{pm(mean_std([float(f['updates']) for f in finals]), 0)} |"
        )
    return lines + [""]


EXTRA_COLUMNS = (
    ("attack_success", "attack success (%)", 100.0, 1),
    ("fed_accuracy", "federated accuracy (%)", 100.0, 1),
    ("central_epsilon", "central ε", 1.0, 1),
    ("max_client_epsilon", "largest client ε", 1.0, 2),
    ("compression_ratio", "compression ratio", 1.0, 2),
)
"""Optional ``metrics.csv`` columns the report shows at the end of each run when any run has them:
(column, heading, scale, decimals)."""


def extra_table(groups: list[Group]) -> list[str]:
    """Final values of the optional columns (:data:`EXTRA_COLUMNS`) and bytes uploaded per update."""
    finals = {g.label: [final_row(r.metrics) for r in g.runs] for g in groups}
    shown = [c for c in EXTRA_COLUMNS if any(f.get(c[0], "") != "" for rows in finals.values() for f in rows)]
    lines = table_head(
        "Final privacy, attack and communication metrics", "At each run's last evaluation.",
        ("group", *(c[1] for c in shown), "bytes up per update"),
    )
    for g in groups:
        cells = []
        for column, _, scale, digits in shown:
            values = [scale * float(f[column]) for f in finals[g.label] if f.get(column, "") != ""]
            cells.append(pm(mean_std(values), digits))
        per_update = [float(f["bytes_up"]) / float(f["updates"]) for f in finals[g.label]
                      if f.get("bytes_up", "") != "" and float(f.get("updates") or 0) > 0]
        cells.append(pm(mean_std(per_update), 0))
        lines.append(f"| {g.label} | " + " | ".join(cells) + " |")
    return lines + [""]


def matrix(dirs: Sequence[Path], groups: list[Group], targets: Sequence[float]) -> list[str]:
    """Matrices over a sweep's two axes (first: rows, second: columns): final
    accuracy, attack success (when measured), virtual time to each target and
    the final worst-10% client accuracy (when measured)."""
    manifests = [read_manifest(Path(d)) for d in dirs]
    if len(dirs) != 1 or manifests[0] is None or len(manifests[0]["axes"]) != 2:
        return []
    rows_axis, cols_axis = (a["name"] for a in manifests[0]["axes"])
    by_labels = {(g.labels.get(rows_axis), g.labels.get(cols_axis)): g for g in groups}
    row_labels, col_labels = (a["labels"] for a in manifests[0]["axes"])

    def final_mean(column: str) -> Callable[[Group], str | None]:
        def cell(g: Group) -> str | None:
            values = [final_row(r.metrics).get(column, "") for r in g.runs]
            numbers = [100.0 * float(v) for v in values if v != ""]
            return f"{statistics.fmean(numbers):.1f}" if numbers else None

        return cell

    def to_target(target: float) -> Callable[[Group], str | None]:
        def cell(g: Group) -> str | None:
            s = target_stats(g, target)
            return f"{s.time[0]:.1f} ({s.reached}/{s.runs})" if s.reached else f"— (0/{s.runs})"

        return cell

    tables = [("Final test accuracy (%)", final_mean("accuracy")),
              ("Attack success (%) at the end (backdoor)", final_mean("attack_success"))]
    tables += [(f"Virtual time (s) to {100 * t:g}% accuracy (reached/seeds)", to_target(t)) for t in targets]
    tables.append(("Final worst-10% client accuracy (%) (`client_acc_worst10`)", final_mean(WORST10)))
    lines = []
    for heading, compute in tables:
        cells = {key: text for key, g in by_labels.items() if (text := compute(g)) is not None}
        if not cells:
            continue
        used_rows = [r for r in row_labels if any((r, c) in cells for c in col_labels)]
        lines += table_head(f"{heading}, mean over seeds: {rows_axis} × {cols_axis}", "", (rows_axis, *col_labels))
        lines += [f"| {r} | " + " | ".join(cells.get((r, c), "—") for c in col_labels) + " |" for r in used_rows]
        lines.append("")
    return lines



WORST10 = "client_acc_worst10"
"""The ``metrics.csv`` column of the mean accuracy of the worst 10% of clients (``evaluation.fairness``)."""


def speed_fairness_table(groups: list[Group], targets: Sequence[float]) -> list[str]:
    """Per group, virtual time to each target beside the final accuracy and worst-10% client accuracy.

    The worst-10% client accuracy is the last evaluation's ``client_acc_worst10``
    (:data:`WORST10`); the section is left out when no run has it.

    Parameters
    ----------
    groups
        The report's groups.
    targets
        Target accuracies in (0, 1].

    Returns
    -------
    list[str]
        Markdown lines (none without ``client_acc_worst10``).
    """
    with_data = [g for g in groups if any(final_row(r.metrics).get(WORST10, "") != "" for r in g.runs)]
    if not with_data:
        return []
    lines = table_head(
        "Speed and fairness",
        "Virtual time to each target (mean ± std over the seeds that reached it, reached/seeds) beside "
        "the last evaluation's test accuracy and mean accuracy of the worst 10% of clients "
        "(`client_acc_worst10`, on their held-out splits), mean ± std over seeds.",
        ("group", *(f"time to {100 * t:g}% (s)" for t in targets),
         "final accuracy (%)", "final worst-10% client accuracy (%)"),
    )
    for g in with_data:
        cells = []
        for target in targets:
            s = target_stats(g, target)
            cells.append(f"{pm(s.time)} ({s.reached}/{s.runs})" if s.reached else f"— (0/{s.runs})")
        finals = [final_row(r.metrics) for r in g.runs]
        cells.append(pm(mean_std([100 * float(f["accuracy"]) for f in finals])))
        cells.append(pm(mean_std([100 * float(f[WORST10]) for f in finals if f.get(WORST10, "") != ""])))
        lines.append(f"| {g.label} | " + " | ".join(cells) + " |")
    return lines + [""]


def fairness_section(groups: list[Group]) -> list[str]:
    with_data = [g for g in groups if any(r.client_accuracy for r in g.runs)]
    if not with_data:
        return [
            "## Fairness across clients",
            "",
            f"Skipped: no run has per-client accuracies (`{CLIENT_ACCURACY_FILE}`). "
            "They come from evaluating the global model on each client's held-out split "
            "(`fedstale.fairness.held_out_split`).",
            "",
        ]
    lines = table_head(
        "Fairness across clients",
        "Per-client accuracy of the last evaluated model on each client's held-out split; "
        "mean ± std over seeds of each statistic (`fedstale.fairness.summarize`).",
        ("group", "clients", "mean (%)", "std (%)", "worst 10% mean (%)", "Jain's index"),
    )
    for g in with_data:
        summaries = [summarize(last_client_accuracies(r.client_accuracy)) for r in g.runs if r.client_accuracy]
        lines.append(
            f"| {g.label} | {summaries[0].clients} | "
            f"{pm(mean_std([100 * s.mean for s in summaries]))} | "
            f"{pm(mean_std([100 * s.std for s in summaries]))} | "
            f"{pm(mean_std([100 * s.worst_mean for s in summaries]))} | "
            f"{pm(mean_std([s.jain for s in summaries]), 3)} |"
        )
    return lines + [""]
