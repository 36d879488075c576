"""The report's PNG figures, each with its markdown section."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .numbers import accepted_staleness, group_curve, per_client_mean, target_stats
from .runs import Group
from .tables import pm, table_head

MAX_PANELS = 12
"""Most groups drawn in the per-group figures (participation, client times)."""

LOG_TIME_RATIO = 10.0
"""The accuracy figure's time axis is logarithmic when the longest group lasts this many times the shortest."""


def pyplot():  # type: ignore[no-untyped-def]
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


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


def accuracy_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
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


def target_section(groups: list[Group], targets: Sequence[float], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    stats = {(g.label, t): target_stats(g, t) for g in groups for t in targets}
    columns = ["group"] + [c for t in targets for c in (f"time to {100 * t:g}% (s)", f"updates to {100 * t:g}%")]
    lines = table_head(
        "Time and updates to target accuracy",
        "Virtual time and client updates received at the first evaluation with accuracy ≥ "
        "target, mean ± std over the seeds that reached it (reached/seeds in brackets).",
        columns,
    )
    for g in groups:
        cells = []
        for t in targets:
            s = stats[(g.label, t)]
            cells += [f"{pm(s.time, 2)} ({s.reached}/{s.runs})", pm(s.updates, 0)]
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


def staleness_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    lines = table_head(
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


def participation_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
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


def client_time_section(groups: list[Group], out: Path, plt) -> list[str]:  # type: ignore[no-untyped-def]
    lines = table_head(
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


