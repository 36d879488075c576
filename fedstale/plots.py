"""PNG plots of a run, drawn from its CSV files.

``plot_run(run_dir)`` writes into ``run_dir/plots/``:

- ``accuracy_vs_time.png``: test accuracy against virtual time;
- ``staleness_hist.png``: histogram of the staleness of accepted updates;
- ``updates_per_client.png``: accepted and rejected updates per client.

``python -m fedstale.plots RUN_DIR`` redraws them.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a fedstale CSV file (also importable from :mod:`fedstale.results`)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _pyplot():  # type: ignore[no-untyped-def]
    # MPLCONFIGDIR is set by fedstale/__init__.py (Matplotlib's cache stays in
    # the working directory).
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def plot_run(run_dir: Path) -> list[Path]:
    """Draw the plots of ``run_dir``; return their paths."""
    run_dir = Path(run_dir)
    plt = _pyplot()
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    metrics = [r for r in read_csv(run_dir / "metrics.csv") if r["accuracy"] != ""]
    clients = read_csv(run_dir / "clients.csv")
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [float(r["virtual_time"]) for r in metrics],
        [float(r["accuracy"]) for r in metrics],
        marker=".",
    )
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{run_dir.name}: accuracy vs virtual time")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "accuracy_vs_time.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    staleness = [int(r["staleness"]) for r in clients if r["accepted"] == "True"]
    top = max(staleness, default=0)
    ax.hist(staleness, bins=range(0, top + 2), align="left", rwidth=0.85)
    ax.set_xlabel("staleness τ (model versions)")
    ax.set_ylabel("accepted updates")
    ax.set_title(f"{run_dir.name}: staleness")
    paths.append(_save(fig, out / "staleness_hist.png", plt))

    fig, ax = plt.subplots(figsize=(7, 4))
    accepted = Counter(int(r["client_id"]) for r in clients if r["accepted"] == "True")
    rejected = Counter(int(r["client_id"]) for r in clients if r["accepted"] != "True")
    ids = sorted(set(accepted) | set(rejected))
    ax.bar(ids, [accepted[i] for i in ids], label="accepted")
    ax.bar(ids, [rejected[i] for i in ids], bottom=[accepted[i] for i in ids], label="rejected")
    ax.set_xlabel("client id")
    ax.set_ylabel("updates")
    ax.set_title(f"{run_dir.name}: updates per client")
    ax.legend()
    paths.append(_save(fig, out / "updates_per_client.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m fedstale.plots RUN_DIR   (redraws RUN_DIR/plots/*.png)")
        raise SystemExit(0 if len(sys.argv) == 2 else 2)
    for written in plot_run(Path(sys.argv[1])):
        print(written)
