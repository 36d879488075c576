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
- for a sweep with two axes (besides seeds), a matrix of final accuracy
  (and of the backdoor's attack success, when measured).

Standard deviations are over seeds (``statistics.stdev``, n − 1; 0 for one seed).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import flatten
from .fairness import CLIENT_ACCURACY_FILE, summarize
from .results import read_csv
from .sweep import is_finished, read_manifest

SEED_FIELDS = ("run.seed", "data.seed")
"""Fields in which runs of one group may differ."""

NOT_COMPARED = SEED_FIELDS + ("run.name", "run.output_dir", "run.resume")
"""Fields ignored when grouping runs."""

MAX_PANELS = 12
"""Most groups drawn in the per-group figures (participation, client times)."""

CURVE_POINTS = 200
"""Points of each group's virtual-time grid in :func:`group_curve`."""

LOG_TIME_RATIO = 10.0
"""The accuracy figure's time axis is logarithmic when the longest group lasts this many times the shortest."""


class ReportError(ValueError):
    """Nothing to report on (the message says what is missing)."""


@dataclass
class RunData:
    """One run folder's files."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, str]]
    clients: list[dict[str, str]]
    labels: dict[str, str] = field(default_factory=dict)
    client_accuracy: list[dict[str, str]] | None = None
    display: str = ""
    """The group label from a sweep's axes (empty: from the folder name)."""

    @property
    def finished(self) -> bool:
        """Whether the run wrote its final model."""
        return (self.path / "model.pt").is_file()


@dataclass
class Group:
    """Runs of one setting, over seeds."""

    label: str
    runs: list[RunData]
    labels: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Loading and grouping
# --------------------------------------------------------------------------


def load_run(path: Path, labels: dict[str, str] | None = None) -> RunData:
    """Read a run folder."""
    path = Path(path)
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) if (path / "config.yaml").is_file() else {}
    clients = read_csv(path / "clients.csv") if (path / "clients.csv").is_file() else []
    fairness = path / CLIENT_ACCURACY_FILE
    return RunData(
        path,
        flatten(config or {}),
        read_csv(path / "metrics.csv"),
        clients,
        dict(labels or {}),
        read_csv(fairness) if fairness.is_file() else None,
    )


def collect_runs(dirs: Sequence[Path], notes: list[str] | None = None) -> list[RunData]:
    """The runs in ``dirs``: run folders as they are, sweep folders by their finished cells.

    A sweep's cells that have not finished are left out and counted in ``notes``.

    Raises
    ------
    ReportError
        If a folder is neither a run folder nor holds run folders.
    """
    runs: list[RunData] = []
    notes = [] if notes is None else notes
    for folder in map(Path, dirs):
        if (folder / "metrics.csv").is_file():
            runs.append(load_run(folder))
            continue
        manifest = read_manifest(folder)
        if manifest is not None:
            missing = [c["name"] for c in manifest["cells"] if not is_finished(folder / c["name"])]
            if missing:
                notes.append(
                    f"Sweep `{folder}`: {len(missing)} of {len(manifest['cells'])} cells have not "
                    "finished and are left out (`fedstale sweep` again runs them)."
                )
            for cell in manifest["cells"]:
                run_dir = folder / cell["name"]
                if cell["name"] not in missing:
                    labels = {a["name"]: cell["labels"][a["name"]] for a in manifest["axes"]}
                    run = load_run(run_dir, labels)
                    run.display = " / ".join(
                        f"{a.get('prefix') or ''}={labels[a['name']]}".lstrip("=") for a in manifest["axes"]
                    ) or str(manifest["name"])
                    runs.append(run)
            continue
        children = sorted(p for p in folder.glob("*/metrics.csv")) if folder.is_dir() else []
        if not children:
            raise ReportError(
                f"{folder}: not a run folder (no metrics.csv) and no run folders inside"
            )
        runs.extend(load_run(p.parent) for p in children)
    runs = [r for r in runs if accuracy_rows(r.metrics)]
    if not runs:
        raise ReportError("no run with an evaluated accuracy in " + ", ".join(map(str, dirs)))
    return runs


def group_runs(runs: Sequence[RunData]) -> list[Group]:
    """Group runs whose configs are equal but for :data:`NOT_COMPARED` (in order of appearance)."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = repr(sorted((k, repr(v)) for k, v in run.config.items() if k not in NOT_COMPARED))
        if key not in groups:
            groups[key] = Group(_label(run), [], run.labels)
        groups[key].runs.append(run)
    out = list(groups.values())
    seen: dict[str, int] = {}
    for group in out:
        seen[group.label] = seen.get(group.label, 0) + 1
        if seen[group.label] > 1:
            group.label = f"{group.label} ({seen[group.label]})"
    return out


def _label(run: RunData) -> str:
    if run.display:
        return run.display
    name = re.sub(r"(^|_)seed-\d+", "", run.path.name).strip("_")
    return re.sub(r"-\d+$", "", name) if name else run.path.name


# --------------------------------------------------------------------------
# Numbers (all recomputed from the CSV rows)
# --------------------------------------------------------------------------


def accuracy_rows(metrics: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The rows of ``metrics.csv`` with an accuracy."""
    return [r for r in metrics if r.get("accuracy", "") != ""]


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


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def _pm(stats: tuple[float, float], digits: int = 1) -> str:
    mean, std = stats
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


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
    plt = _pyplot()
    title = title or "Report: " + ", ".join(Path(d).resolve().name for d in dirs)
    lines = [f"# {title}", "", _sources(dirs, groups), ""] + [n + "\n" for n in notes]
    lines += _runs_table(groups)
    lines += _extra_table(groups)
    lines += _matrix(dirs, groups, targets)
    lines += _accuracy_section(groups, out, plt)
    lines += _target_section(groups, targets, out, plt)
    lines += _staleness_section(groups, out, plt)
    lines += _participation_section(groups, out, plt)
    lines += _client_time_section(groups, out, plt)
    lines += _fairness_section(groups)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _sources(dirs: Sequence[Path], groups: list[Group]) -> str:
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


def _table_head(title: str, text: str, columns: Sequence[str]) -> list[str]:
    """A section's heading, its text, and the head of its table."""
    head = [f"## {title}", ""] + ([text, ""] if text else [])
    return head + ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _runs_table(groups: list[Group]) -> list[str]:
    lines = _table_head(
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
            f"{_pm(mean_std([100 * float(f['accuracy']) for f in finals]))} | "
            f"{_pm(mean_std([float(f['virtual_time']) for f in finals]))} | "
            f"{_pm(mean_std([float(f['updates']) for f in finals]), 0)} |"
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


def _extra_table(groups: list[Group]) -> list[str]:
    """Final values of the optional columns (:data:`EXTRA_COLUMNS`) and bytes uploaded per update."""
    finals = {g.label: [final_row(r.metrics) for r in g.runs] for g in groups}
    shown = [c for c in EXTRA_COLUMNS if any(f.get(c[0], "") != "" for rows in finals.values() for f in rows)]
    lines = _table_head(
        "Final privacy, attack and communication metrics", "At each run's last evaluation.",
        ("group", *(c[1] for c in shown), "bytes up per update"),
    )
    for g in groups:
        cells = []
        for column, _, scale, digits in shown:
            values = [scale * float(f[column]) for f in finals[g.label] if f.get(column, "") != ""]
            cells.append(_pm(mean_std(values), digits))
        per_update = [float(f["bytes_up"]) / float(f["updates"]) for f in finals[g.label]
                      if f.get("bytes_up", "") != "" and float(f.get("updates") or 0) > 0]
        cells.append(_pm(mean_std(per_update), 0))
        lines.append(f"| {g.label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _matrix(dirs: Sequence[Path], groups: list[Group], targets: Sequence[float]) -> list[str]:
    """Matrices over a sweep's two axes (first: rows, second: columns): final
    accuracy, attack success (when measured) and virtual time to each target."""
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
    lines = []
    for heading, compute in tables:
        cells = {key: text for key, g in by_labels.items() if (text := compute(g)) is not None}
        if not cells:
            continue
        used_rows = [r for r in row_labels if any((r, c) in cells for c in col_labels)]
        lines += _table_head(f"{heading}, mean over seeds: {rows_axis} × {cols_axis}", "", (rows_axis, *col_labels))
        lines += [f"| {r} | " + " | ".join(cells.get((r, c), "—") for c in col_labels) + " |" for r in used_rows]
        lines.append("")
    return lines


def _colors(plt, n: int) -> list[Any]:  # type: ignore[no-untyped-def]
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: Path, plt) -> str:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _legend(ax, n: int) -> None:  # type: ignore[no-untyped-def]
    if not ax.get_legend_handles_labels()[0]:
        return
    if n <= 8:
        ax.legend(fontsize=8)
    else:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _accuracy_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    fig, ax = plt.subplots(figsize=(8 if len(groups) <= 8 else 11, 4.5))
    ends = []
    for g, color in zip(groups, _colors(plt, len(groups))):
        grid, mean, low, high = group_curve(g)
        ends.append(grid[-1])
        ax.plot(grid, mean, color=color, label=f"{g.label} (n={len(g.runs)})")
        if len(g.runs) > 1:
            ax.fill_between(grid, low, high, color=color, alpha=0.15, linewidth=0)
    wide = min(ends) > 0 and max(ends) / min(ends) > LOG_TIME_RATIO
    if wide:  # some groups take 10x longer: a log axis keeps the fast ones readable
        ax.set_xscale("log")
    ax.set_xlabel("virtual time (s)" + (", log scale" if wide else ""))
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs virtual time (mean, min–max band over seeds)")
    ax.grid(alpha=0.3)
    _legend(ax, len(groups))
    name = _save(fig, out / "accuracy_vs_time.png", plt)
    return [
        "## Accuracy vs virtual time",
        "",
        "Mean over seeds of the latest evaluation at each virtual time (over the seeds "
        "still running), with the min–max band.",
        "",
        f"![accuracy vs virtual time]({name})",
        "",
    ]


def _target_section(groups: list[Group], targets: Sequence[float], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    stats = {(g.label, t): target_stats(g, t) for g in groups for t in targets}
    columns = ["group"] + [c for t in targets for c in (f"time to {100 * t:g}% (s)", f"updates to {100 * t:g}%")]
    lines = _table_head(
        "Time and updates to target accuracy",
        "Virtual time and client updates received at the first evaluation with accuracy ≥ "
        "target, mean ± std over the seeds that reached it (reached/seeds in brackets).",
        columns,
    )
    for g in groups:
        cells = []
        for t in targets:
            s = stats[(g.label, t)]
            cells += [f"{_pm(s.time, 2)} ({s.reached}/{s.runs})", _pm(s.updates, 0)]
        lines.append(f"| {g.label} | " + " | ".join(cells) + " |")
    fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets) + (2 if len(groups) > 8 else 0), 4), squeeze=False)
    colors = _colors(plt, len(groups))
    for ax, t in zip(axes[0], targets):
        for i, g in enumerate(groups):
            s = stats[(g.label, t)]
            if s.reached:
                ax.bar(i, s.time[0], yerr=s.time[1], color=colors[i], capsize=3)
            ax.text(i, 0, f"{s.reached}/{s.runs}", ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g.label for g in groups], rotation=75, fontsize=6)
        ax.set_ylabel("virtual time (s)")
        ax.set_title(f"time to {100 * t:g}% accuracy")
        ax.grid(alpha=0.3, axis="y")
    name = _save(fig, out / "time_to_target.png", plt)
    return lines + ["", f"![time to target]({name})", ""]


def _staleness_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    lines = _table_head(
        "Staleness",
        "Staleness τ (model versions between dispatch and merge) of the accepted updates, "
        "all seeds pooled.",
        ("group", "accepted updates", "mean τ", "median τ", "90th percentile τ", "max τ"),
    )
    fig, ax = plt.subplots(figsize=(8 if len(groups) <= 8 else 11, 4))
    for g, color in zip(groups, _colors(plt, len(groups))):
        values = sorted(accepted_staleness(g))
        if not values:
            lines.append(f"| {g.label} | 0 | — | — | — | — |")
            continue
        p90 = values[min(len(values) - 1, math.ceil(0.9 * len(values)) - 1)]
        lines.append(
            f"| {g.label} | {len(values)} | {statistics.fmean(values):.2f} | "
            f"{statistics.median(values):g} | {p90} | {values[-1]} |"
        )
        top = values[-1]
        ax.hist(values, bins=range(0, top + 2), density=True, histtype="step", color=color, label=g.label, align="left")
    ax.set_xlabel("staleness τ (model versions)")
    ax.set_ylabel("share of accepted updates")
    ax.set_title("staleness distribution")
    _legend(ax, len(groups))
    name = _save(fig, out / "staleness.png", plt)
    return lines + ["", f"![staleness]({name})", ""]


def _panels(plt, n: int, width: float = 3.6, height: float = 2.8):  # type: ignore[no-untyped-def]
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [a for row in axes for a in row]
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat


def _shown(groups: list[Group]) -> tuple[list[Group], str]:
    if len(groups) <= MAX_PANELS:
        return groups, ""
    return groups[:MAX_PANELS], f" (the first {MAX_PANELS} of {len(groups)} groups)"


def _participation_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    shown, note = _shown(groups)
    fig, axes = _panels(plt, len(shown))
    for ax, g in zip(axes, shown):
        run = g.runs[0]
        ax.set_title(f"{g.label} (seed {run.config.get('run.seed', '?')})", fontsize=7)
        if not run.clients:
            ax.text(0.5, 0.5, "no updates", ha="center", va="center", transform=ax.transAxes)
            continue
        clients = sorted({int(r["client_id"]) for r in run.clients})
        end = max((float(r["arrival_time"]) for r in run.clients), default=0.0) or 1.0
        bins = 30
        counts = [[0] * bins for _ in clients]
        index = {c: i for i, c in enumerate(clients)}
        for r in run.clients:
            b = min(bins - 1, int(float(r["arrival_time"]) / end * bins))
            counts[index[int(r["client_id"])]][b] += 1
        image = ax.imshow(counts, aspect="auto", origin="lower", cmap="viridis", extent=(0, end, -0.5, len(clients) - 0.5))
        if len(clients) <= 25:
            ax.set_yticks(range(len(clients)), [str(c) for c in clients])
        ax.set_xlabel("virtual time (s)", fontsize=7)
        ax.set_ylabel("client id", fontsize=7)
        ax.tick_params(labelsize=6)
        fig.colorbar(image, ax=ax).ax.tick_params(labelsize=6)
    name = _save(fig, out / "participation.png", plt)
    return [
        "## Participation",
        "",
        f"Updates received per client and virtual-time bin (30 bins), first seed of each group{note}.",
        "",
        f"![participation]({name})",
        "",
    ]


def _client_time_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    lines = _table_head(
        "Client execution times",
        "Per client, the mean `virtual_duration` (simulated seconds from dispatch to arrival) "
        "and mean `fit_seconds` (wall seconds of local training) of its updates, all seeds pooled.",
        ("group", "mean virtual duration (s)", "slowest / fastest client (virtual)", "mean fit_seconds (s)"),
    )
    shown, note = _shown(groups)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11 if len(shown) <= 8 else 13, 4))
    for g in groups:
        rows = [r for run in g.runs for r in run.clients]
        virtual = per_client_mean(rows, "virtual_duration")
        fit = per_client_mean(rows, "fit_seconds")
        all_virtual = [float(r["virtual_duration"]) for r in rows if r["virtual_duration"] != ""]
        all_fit = [float(r["fit_seconds"]) for r in rows if r["fit_seconds"] != ""]
        ratio = max(virtual.values()) / min(virtual.values()) if virtual and min(virtual.values()) > 0 else math.nan
        lines.append(
            f"| {g.label} | {statistics.fmean(all_virtual):.3f} | {ratio:.1f} | "
            f"{statistics.fmean(all_fit):.4f} |" if all_virtual and all_fit else f"| {g.label} | — | — | — |"
        )
    for g, color in zip(shown, _colors(plt, len(shown))):
        rows = [r for run in g.runs for r in run.clients]
        for ax, column in ((left, "virtual_duration"), (right, "fit_seconds")):
            means = per_client_mean(rows, column)
            ax.plot(list(means), list(means.values()), marker=".", color=color, label=g.label)
    left.set_ylabel("mean virtual duration (s)")
    right.set_ylabel("mean fit_seconds (wall s)")
    for ax in (left, right):
        ax.set_xlabel("client id")
        ax.grid(alpha=0.3)
    left.set_yscale("log")
    _legend(right, len(shown))
    name = _save(fig, out / "client_times.png", plt)
    return lines + ["", f"Per client{note}:", "", f"![client execution times]({name})", ""]


def _fairness_section(groups: list[Group]) -> list[str]:
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
    lines = _table_head(
        "Fairness across clients",
        "Per-client accuracy of the last evaluated model on each client's held-out split; "
        "mean ± std over seeds of each statistic (`fedstale.fairness.summarize`).",
        ("group", "clients", "mean (%)", "std (%)", "worst 10% mean (%)", "Jain's index"),
    )
    for g in with_data:
        summaries = [summarize(last_client_accuracies(r.client_accuracy)) for r in g.runs if r.client_accuracy]
        lines.append(
            f"| {g.label} | {summaries[0].clients} | "
            f"{_pm(mean_std([100 * s.mean for s in summaries]))} | "
            f"{_pm(mean_std([100 * s.std for s in summaries]))} | "
            f"{_pm(mean_std([100 * s.worst_mean for s in summaries]))} | "
            f"{_pm(mean_std([s.jain for s in summaries]), 3)} |"
        )
    return lines + [""]
