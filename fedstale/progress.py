"""Console output: concise ``[LOG]`` lines and a progress bar.

Lines go through Flower's logger, so they appear in ``flwr run --stream``
and in the SuperLink's log like the rest of the run's output.
"""

from __future__ import annotations

from logging import INFO, WARNING

from flwr.supercore import log

BAR_WIDTH = 20


def log_line(text: str, *args: object, warning: bool = False) -> None:
    """Log one ``[LOG]`` line."""
    log(WARNING if warning else INFO, "[LOG] " + text, *args)


def progress_bar(done: float, total: float, width: int = BAR_WIDTH) -> str:
    """Return ``▕█████░░░░░▏ 50%`` for ``done`` out of ``total``."""
    fraction = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    filled = int(round(fraction * width))
    return f"▕{'█' * filled}{'░' * (width - filled)}▏{fraction * 100:4.0f}%"


def format_evaluation(row: dict[str, object], total_versions: int) -> str:
    """One progress line for an evaluation row of ``metrics.csv``."""
    parts = [
        progress_bar(float(row["version"]), total_versions),  # type: ignore[arg-type]
        f"v={row['version']}/{total_versions}",
        f"t={float(row['virtual_time']):.1f}s",  # type: ignore[arg-type]
        f"updates={row['updates']}",
    ]
    for key, label in (("accuracy", "acc"), ("loss", "loss")):
        value = row.get(key)
        if value not in (None, ""):
            parts.append(f"{label}={float(value):.4f}")  # type: ignore[arg-type]
    staleness = row.get("mean_staleness")
    if staleness not in (None, ""):
        parts.append(f"τ̄={float(staleness):.2f}")  # type: ignore[arg-type]
    if row.get("failures"):
        parts.append(f"failures={row['failures']}")
    parts.append(f"wall={float(row['wall_time']):.1f}s")  # type: ignore[arg-type]
    return " ".join(parts)
