"""Tests of the run recorder (fedstale/results.py) and its plots (fedstale/plots.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from flwr.app import Array, ArrayRecord

from fedstale.plots import plot_run
from fedstale.results import (
    CLIENT_COLUMNS,
    METRICS_COLUMNS,
    RunRecorder,
    read_csv,
    unique_run_dir,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("accuracy_vs_time.png", "staleness_hist.png", "updates_per_client.png")


@pytest.fixture(autouse=True)
def _matplotlib_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep matplotlib's font cache in tmp_path and the environment unchanged."""
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mplconfig"))


def _arrays() -> ArrayRecord:
    return ArrayRecord(
        {
            "fc.weight": Array(np.arange(6, dtype=np.float32).reshape(2, 3) / 8),
            "fc.bias": Array(np.array([0.5, -2.0], dtype=np.float32)),
        }
    )


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def _client_row(task_id: int, client_id: int, staleness: int, accepted: bool) -> dict:
    return {
        "task_id": task_id,
        "client_id": client_id,
        "staleness": staleness,
        "weight": 1 / (1 + staleness) ** 0.5,
        "accepted": accepted,
        "reason": "" if accepted else "stale",
    }


def test_unique_run_dir(tmp_path: Path) -> None:
    """A free name is used as is; taken names get -2, -3, ..."""
    base = tmp_path / "exp"
    assert unique_run_dir(base) == base
    base.mkdir()
    assert unique_run_dir(base) == tmp_path / "exp-2"
    (tmp_path / "exp-2").mkdir()
    assert unique_run_dir(base) == tmp_path / "exp-3"
    (tmp_path / "exp-4").mkdir()  # a gap is filled first
    assert unique_run_dir(base) == tmp_path / "exp-3"


def test_recorder_never_overwrites(tmp_path: Path) -> None:
    """RunRecorder refuses an existing folder; unique_run_dir gives a fresh one."""
    first = RunRecorder(tmp_path / "run", {"a": 1})
    first.on_update(_client_row(0, 0, 0, True))
    with pytest.raises(FileExistsError):
        RunRecorder(tmp_path / "run", {"a": 2})
    second = RunRecorder(unique_run_dir(tmp_path / "run"), {"a": 2})
    assert second.run_dir == tmp_path / "run-2"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == {"a": 1}
    assert len(read_csv(tmp_path / "run" / "clients.csv")) == 1


def test_recorder_creates_files_with_headers(tmp_path: Path) -> None:
    """config.yaml holds the config; both CSVs start with exactly their columns."""
    config = {"strategy": {"name": "fedbuff", "concurrency": 10}, "client": {"lr": 0.05}}
    rec = RunRecorder(tmp_path / "run", config)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == config
    assert _header(tmp_path / "run" / "metrics.csv") == list(METRICS_COLUMNS)
    assert _header(tmp_path / "run" / "clients.csv") == list(CLIENT_COLUMNS)
    # The columns the output contract promises (issue: foundation, outputs).
    assert {"version", "virtual_time", "wall_time", "updates", "accuracy", "loss"} <= set(
        METRICS_COLUMNS
    )
    assert {
        "client_id", "dispatch_version", "arrival_version", "staleness", "virtual_duration",
        "wall_duration", "num_examples", "train_loss", "accepted",
    } <= set(CLIENT_COLUMNS)
    rec.finish(_arrays(), plots=False)


def test_rows_flushed_immediately(tmp_path: Path) -> None:
    """Rows are on disk before finish; missing columns are empty."""
    rec = RunRecorder(tmp_path / "run", {})
    rec.on_evaluate({"version": 5, "virtual_time": 1.23456789, "accuracy": 0.5, "loss": 2.0})
    rec.on_update(_client_row(0, 3, 2, True))
    rec.on_update(_client_row(1, 4, 9, False))
    metrics = read_csv(tmp_path / "run" / "metrics.csv")
    clients = read_csv(tmp_path / "run" / "clients.csv")
    assert len(metrics) == 1
    assert metrics[0]["version"] == "5"
    assert float(metrics[0]["virtual_time"]) == pytest.approx(1.23456789, rel=1e-5)
    assert metrics[0]["fed_accuracy"] == ""
    assert len(clients) == 2
    assert [r["client_id"] for r in clients] == ["3", "4"]
    assert clients[1]["reason"] == "stale"
    assert clients[1]["accepted"] == "False"
    rec.finish(_arrays(), plots=False)


def test_checkpoints_at_multiples(tmp_path: Path) -> None:
    """on_model saves version_<v:06d>.pt only when v is a multiple of checkpoint_every."""
    rec = RunRecorder(tmp_path / "run", {}, checkpoint_every=10)
    calls = []

    def get_arrays() -> ArrayRecord:
        calls.append(1)
        return _arrays()

    for version in range(1, 26):
        rec.on_model(version, get_arrays)
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["version_000010.pt", "version_000020.pt"]
    assert len(calls) == 2  # the model is only materialised when saved
    state = torch.load(folder / "version_000010.pt")
    assert list(state) == ["fc.weight", "fc.bias"]
    assert state["fc.bias"].tolist() == [0.5, -2.0]
    rec.finish(_arrays(), plots=False)


def test_checkpoint_every_zero_never_saves(tmp_path: Path) -> None:
    """checkpoint_every = 0 writes no checkpoint at all."""
    rec = RunRecorder(tmp_path / "run", {}, checkpoint_every=0)
    for version in range(0, 30):
        rec.on_model(version, _arrays)
    assert not (tmp_path / "run" / "checkpoints").exists()
    rec.finish(_arrays(), plots=False)


def test_finish_writes_model_and_plots(tmp_path: Path) -> None:
    """finish: model.pt loads into the same keys and values; three valid PNGs."""
    rec = RunRecorder(tmp_path / "run", {"run": {"name": "run"}})
    for version, acc in ((0, 0.1), (5, 0.4), (10, 0.7)):
        rec.on_evaluate({"version": version, "virtual_time": version * 1.5, "accuracy": acc, "loss": 1.0})
    rec.on_evaluate({"version": 12, "virtual_time": 20.0})  # no accuracy: skipped by the plot
    for i, (client, stale, ok) in enumerate([(0, 0, True), (1, 3, True), (1, 5, False), (2, 1, True)]):
        rec.on_update(_client_row(i, client, stale, ok))
    arrays = _arrays()
    rec.finish(arrays)
    state = torch.load(tmp_path / "run" / "model.pt")
    assert list(state) == ["fc.weight", "fc.bias"]
    assert torch.equal(state["fc.weight"], torch.arange(6, dtype=torch.float32).reshape(2, 3) / 8)
    assert state["fc.bias"].tolist() == [0.5, -2.0]
    plots = tmp_path / "run" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == sorted(PLOTS)
    for name in PLOTS:
        data = (plots / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert len(data) > 1000, name
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_finish_without_plots(tmp_path: Path) -> None:
    """plots=False writes model.pt and no plots folder."""
    rec = RunRecorder(tmp_path / "run", {})
    rec.finish(_arrays(), plots=False)
    assert (tmp_path / "run" / "model.pt").is_file()
    assert not (tmp_path / "run" / "plots").exists()


def test_plot_run_on_empty_run(tmp_path: Path) -> None:
    """A run with no rows still gets its three plots (returned in order)."""
    rec = RunRecorder(tmp_path / "run", {})
    rec.finish(_arrays(), plots=False)
    paths = plot_run(tmp_path / "run")
    assert [p.name for p in paths] == list(PLOTS)
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in paths)
