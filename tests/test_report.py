"""Reports: every number recomputed from the CSV files, checked by hand and directly."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

import pytest
import yaml

from fedstale.fairness import CLIENT_ACCURACY_COLUMNS, CLIENT_ACCURACY_FILE
from fedstale.report import ReportError, build_report, step_curve, time_to_target
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS, read_csv
from fedstale.sweep import load_spec, run_sweep
from tests.helpers import ROOT, TINY_OVERRIDES

PNG = b"\x89PNG\r\n\x1a\n"


def _write_csv(path: Path, columns, rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def make_run(folder: Path, seed: int, strategy: str, evaluations, updates=(), client_accuracy=None,
             worst10=None) -> Path:
    """A run folder: ``evaluations`` are (virtual_time, updates, accuracy[, attack_success]);
    ``worst10``, when given, the ``client_acc_worst10`` of each evaluation."""
    folder.mkdir(parents=True)
    config = {"run": {"seed": seed, "name": folder.name}, "strategy": {"name": strategy, "mode": "auto"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [
        {"version": i, "virtual_time": t, "updates": u, "accuracy": a, "attack_success": rest[0] if rest else ""}
        for i, (t, u, a, *rest) in enumerate(evaluations)
    ]
    for row, worst in zip(rows, worst10 or ()):
        row["client_acc_worst10"] = worst
    _write_csv(folder / "metrics.csv", METRICS_COLUMNS, rows)
    clients = [
        {"client_id": c, "staleness": s, "accepted": str(ok), "virtual_duration": d, "fit_seconds": f, "arrival_time": i}
        for i, (c, s, ok, d, f) in enumerate(updates)
    ]
    _write_csv(folder / "clients.csv", CLIENT_COLUMNS, clients)
    if client_accuracy is not None:
        _write_csv(folder / CLIENT_ACCURACY_FILE, CLIENT_ACCURACY_COLUMNS, client_accuracy)
    (folder / "model.pt").write_bytes(b"")
    return folder


def _table_row(report: str, first_cell: str, heading: str) -> str:
    section = report.split(f"## {heading}")[1].split("\n## ")[0]
    return next(line for line in section.splitlines() if line.startswith(f"| {first_cell} |"))


@pytest.fixture()
def hand_runs(tmp_path):
    """Group A (fedbuff, seeds 0 and 1) and group B (fedasync, seed 0)."""
    per_client = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0]
    fairness = [{"version": 0, "client_id": c, "accuracy": 0.1} for c in range(10)] + [
        {"version": 3, "client_id": c, "accuracy": a} for c, a in enumerate(per_client)
    ]
    updates = [(0, 0, True, 1.0, 0.1), (0, 1, True, 3.0, 0.2), (1, 1, True, 4.0, 0.3),
               (1, 2, True, 4.0, 0.2), (0, 5, True, 1.0, 0.2), (1, 9, False, 4.0, 0.2)]
    make_run(tmp_path / "A_seed-0", 0, "fedbuff", [(0, 0, 0.1), (1, 10, 0.85), (2, 20, 0.92), (3, 30, 0.95)],
             updates, fairness)
    make_run(tmp_path / "A_seed-1", 1, "fedbuff", [(0, 0, 0.2), (2, 15, 0.7), (4, 30, 0.91)],
             updates, [dict(r, version=r["version"] * 2 // 3) for r in fairness])
    make_run(tmp_path / "B_seed-0", 0, "fedasync", [(0, 0, 0.1), (5, 50, 0.5)], [(2, 3, True, 2.0, 0.5)])
    return tmp_path


def test_report_numbers_match_a_hand_computation(hand_runs, tmp_path):
    path = build_report([hand_runs / "A_seed-0", hand_runs / "A_seed-1", hand_runs / "B_seed-0"],
                        tmp_path / "out", targets=[0.8, 0.9])
    report = path.read_text()
    assert "3 runs in 2 groups" in report
    # final accuracy 95 and 91: mean 93, stdev sqrt(8) = 2.83; end times 3 and 4; updates 30
    assert _table_row(report, "A", "Runs") == "| A | 0,1 | fedbuff (async) | 93.0 ± 2.8 | 3.5 ± 0.7 | 30 ± 0 |"
    assert _table_row(report, "B", "Runs") == "| B | 0 | fedasync (async) | 50.0 ± 0.0 | 5.0 ± 0.0 | 50 ± 0 |"
    # to 80%: (t=1, 10 updates) and (t=4, 30): 2.5 ± 2.12, 20 ± 14; to 90%: (2, 20) and (4, 30)
    assert _table_row(report, "A", "Time and updates") == (
        "| A | 2.50 ± 2.12 (2/2) | 20 ± 14 | 3.00 ± 1.41 (2/2) | 25 ± 7 |"
    )
    assert _table_row(report, "B", "Time and updates") == "| B | — (0/1) | — | — (0/1) | — |"
    # accepted staleness, both seeds: 0,1,1,2,5 twice -> mean 1.8, median 1, p90 5, max 5 (τ=9 rejected)
    assert _table_row(report, "A", "Staleness") == "| A | 10 | 1.80 | 1 | 5 | 5 |"
    # virtual durations: client 0 (1, 3, 1) -> 5/3, client 1 (4, 4, 4) -> 4; all: 17/6 = 2.833
    # ratio 4 / (5/3) = 2.4; fit_seconds mean 1.2/6 = 0.2
    assert _table_row(report, "A", "Client execution times") == "| A | 2.833 | 2.4 | 0.2000 |"
    # fairness of the last version: mean 0.85, std 0.18028, worst 10% 0.5, Jain 0.956954
    assert _table_row(report, "A", "Fairness") == (
        "| A | 10 | 85.0 ± 0.0 | 18.0 ± 0.0 | 50.0 ± 0.0 | 0.957 ± 0.000 |"
    )
    assert "| B |" not in report.split("## Fairness")[1]
    for name in ("accuracy_vs_time", "time_to_target", "staleness", "participation", "client_times"):
        assert (tmp_path / "out" / f"{name}.png").read_bytes()[:8] == PNG
        assert f"]({name}.png)" in report


def test_fairness_is_skipped_with_a_note_without_per_client_accuracies(hand_runs, tmp_path):
    report = build_report([hand_runs / "B_seed-0"], tmp_path / "out").read_text()
    assert "Skipped: no run has per-client accuracies (`client_accuracy.csv`)" in report


def test_a_two_axis_sweep_gets_matrices(tmp_path):
    sweep = tmp_path / "sweep"
    cells = []
    finals = {("clean", "mean"): (0.9, ""), ("clean", "median"): (0.8, ""),
              ("flip", "mean"): (0.1, 0.95), ("flip", "median"): (0.7, 0.05)}
    for (attack, aggregator), (accuracy, success) in finals.items():
        name = f"attack-{attack}_aggregator-{aggregator}_seed-0"
        make_run(sweep / name, 0, aggregator + attack, [(0, 0, 0.1, ""), (1, 5, accuracy, success)])
        cells.append({"name": name, "labels": {"attack": attack, "aggregator": aggregator, "seed": "0"}, "seed": 0})
    manifest = {"name": "m", "axes": [{"name": "attack", "prefix": "attack", "labels": ["clean", "flip"]},
                                      {"name": "aggregator", "prefix": "aggregator", "labels": ["mean", "median"]}],
                "cells": cells}
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(manifest))
    report = build_report([sweep], tmp_path / "out").read_text()
    accuracy = report.split("## Final test accuracy (%), mean over seeds: attack × aggregator")[1]
    assert "| attack | mean | median |\n|---|---|---|\n| clean | 90.0 | 80.0 |\n| flip | 10.0 | 70.0 |" in accuracy
    success = report.split("## Attack success (%) at the end (backdoor), mean over seeds: attack × aggregator")[1]
    assert "| attack | mean | median |\n|---|---|---|\n| flip | 95.0 | 5.0 |" in success
    assert (
        "## Virtual time (s) to 90% accuracy (reached/seeds), mean over seeds: attack × aggregator\n\n"
        "| attack | mean | median |\n|---|---|---|\n| clean | 1.0 (1/1) | — (0/1) |\n| flip | — (0/1) | — (0/1) |"
    ) in report
    assert "| attack=flip / aggregator=median | 0 |" in report
    assert "## Speed and fairness" not in report and "worst-10%" not in report  # no client_acc_worst10
    assert _table_row(report, "attack=flip / aggregator=mean", "Final privacy") == (
        "| attack=flip / aggregator=mean | 95.0 ± 0.0 | — |"
    )
    # a cell that has not finished (no model.pt) is left out, and said so
    (sweep / "attack-flip_aggregator-median_seed-0" / "model.pt").unlink()
    partial = build_report([sweep], tmp_path / "partial").read_text()
    assert f"Sweep `{sweep}`: 1 of 4 cells have not finished and are left out" in partial
    assert "| clean | 90.0 | 80.0 |\n| flip | 10.0 | — |" in partial


def test_time_to_target_and_worst_10_percent_client_accuracy_side_by_side(tmp_path):
    sweep = tmp_path / "sweep"
    cells = []
    # (cell, availability): per seed, evaluations (t, updates, accuracy) and the final client_acc_worst10
    runs = {("sgd", "always"): [([(0, 0, 0.1), (2, 10, 0.92), (3, 15, 0.93)], 0.8),
                                ([(0, 0, 0.1), (4, 10, 0.91), (5, 15, 0.95)], 0.9)],
            ("sgd", "on_off"): [([(0, 0, 0.1), (6, 10, 0.85)], 0.5), ([(0, 0, 0.1), (8, 10, 0.90)], 0.6)],
            ("adam", "always"): [([(0, 0, 0.1), (1, 10, 0.97)], 0.95), ([(0, 0, 0.1), (2, 10, 0.8)], 0.4)]}
    for (cell, availability), seeds in runs.items():
        for seed, (evaluations, worst) in enumerate(seeds):
            name = f"{cell}_availability-{availability}_seed-{seed}"
            make_run(sweep / name, seed, cell + availability, evaluations, worst10=[""] * (len(evaluations) - 1) + [worst])
            cells.append({"name": name, "labels": {"cell": cell, "availability": availability, "seed": str(seed)},
                          "seed": seed})
    manifest = {"name": "p", "axes": [{"name": "cell", "prefix": "", "labels": ["sgd", "adam"]},
                                      {"name": "availability", "prefix": "availability",
                                       "labels": ["always", "on_off"]}],
                "cells": cells}
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(manifest))
    report = build_report([sweep], tmp_path / "out", targets=[0.9]).read_text()
    # worst 10%: sgd always (80 + 90) / 2 = 85, on_off (50 + 60) / 2 = 55; adam always (95 + 40) / 2 = 67.5
    assert (
        "## Final worst-10% client accuracy (%) (`client_acc_worst10`), mean over seeds: cell × availability\n\n"
        "| cell | always | on_off |\n|---|---|---|\n| sgd | 85.0 | 55.0 |\n| adam | 67.5 | — |"
    ) in report
    # to 90%: sgd always at t = 2 and 4 (3.0 ± 1.41), on_off only seed 1 at t = 8, adam only seed 0 at t = 1
    assert (
        "| cell | always | on_off |\n|---|---|---|\n| sgd | 3.0 (2/2) | 8.0 (1/2) |\n| adam | 1.0 (1/2) | — |"
    ) in report
    assert _table_row(report, "sgd / availability=always", "Speed and fairness") == (
        "| sgd / availability=always | 3.0 ± 1.4 (2/2) | 94.0 ± 1.4 | 85.0 ± 7.1 |"
    )
    assert _table_row(report, "sgd / availability=on_off", "Speed and fairness") == (
        "| sgd / availability=on_off | 8.0 ± 0.0 (1/2) | 87.5 ± 3.5 | 55.0 ± 7.1 |"
    )
    assert _table_row(report, "adam / availability=always", "Speed and fairness") == (
        "| adam / availability=always | 1.0 ± 0.0 (1/2) | 88.5 ± 12.0 | 67.5 ± 38.9 |"
    )


def test_bad_input_is_one_error(tmp_path):
    with pytest.raises(ReportError, match="not a run folder"):
        build_report([tmp_path], tmp_path / "out")
    with pytest.raises(ReportError, match=r"--targets: accuracies must be in \(0, 1\], got \[90.0\]"):
        build_report([tmp_path], tmp_path / "out", targets=[90.0])


def test_step_curve_holds_the_latest_evaluation():
    assert step_curve([1.0, 3.0], [0.2, 0.6], [0.0, 1.0, 2.0, 3.0, 4.0])[1:4] == [0.2, 0.2, 0.6]
    ends = step_curve([1.0, 3.0], [0.2, 0.6], [0.0, 4.0])
    assert math.isnan(ends[0]) and math.isnan(ends[1])


def test_time_to_target_of_a_real_sweep_equals_a_direct_computation(tmp_path):
    """A tiny 2-seed sweep in process; the report's table against csv + statistics."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "direct",
        "config": str(ROOT / "configs" / "default.yaml"),
        "overrides": {**TINY_OVERRIDES, "stop.num_updates": 30, "evaluation.every": 2},
        "seeds": [0, 1],
    }, sort_keys=False))
    result = run_sweep(load_spec(spec), tmp_path / "direct", workers=0, stream=io.StringIO())
    assert not result.failed
    report = build_report([tmp_path / "direct"], tmp_path / "out", targets=[0.3, 0.5]).read_text()
    line = _table_row(report, "direct", "Time and updates")
    expected = []
    for target in (0.3, 0.5):
        hits = []
        for seed in (0, 1):
            with (tmp_path / "direct" / f"seed-{seed}" / "metrics.csv").open() as handle:
                for row in csv.DictReader(handle):
                    if row["accuracy"] and float(row["accuracy"]) >= target:
                        hits.append((float(row["virtual_time"]), int(row["updates"])))
                        break
        assert hits, f"no seed reached {target}; lower the targets"
        times, counts = [h[0] for h in hits], [h[1] for h in hits]
        spread = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        expected += [f"{statistics.fmean(times):.2f} ± {spread(times):.2f} ({len(hits)}/2)",
                     f"{statistics.fmean(counts):.0f} ± {spread(counts):.0f}"]
        assert time_to_target(read_csv(tmp_path / "direct" / "seed-0" / "metrics.csv"), target) == hits[0]
    assert line == "| direct | " + " | ".join(expected) + " |"
