"""Trackers: TensorBoard event files and MLflow runs hold the run's metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedstale.results import read_csv
from fedstale.runner import plan_run, run_local
from fedstale.config import ConfigError
from fedstale.tracking import TrackingRecorder, make_tracker, replay_run
from tests.helpers import CONFIGS, TINY_OVERRIDES as TINY



class _Fake:
    """Records every call it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.run_dir = Path("/nowhere")
        self.resolved_config = {"run": {"seed": 3}}

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, *args, *kwargs.values()))


def test_tracking_recorder_forwards_every_call_and_logs_evaluations():
    recorder, tracker = _Fake(), _Fake()
    wrapped = TrackingRecorder(recorder, tracker)
    getter = object()
    wrapped.on_update({"task_id": 1})
    wrapped.on_evaluate({"version": 5, "accuracy": 0.5})
    wrapped.on_model(5, getter)
    wrapped.on_resume_point(5, getter, True)
    wrapped.finish("arrays", plots=False)
    assert recorder.calls == [
        ("on_update", {"task_id": 1}),
        ("on_evaluate", {"version": 5, "accuracy": 0.5}),
        ("on_model", 5, getter),
        ("on_resume_point", 5, getter, True),
        ("finish", "arrays", False),
    ]
    assert tracker.calls == [
        ("log_config", {"run": {"seed": 3}}),
        ("log_metrics", {"version": 5, "accuracy": 0.5}, 5),
        ("log_artifacts", Path("/nowhere")),
        ("close",),
    ]


def test_unknown_or_missing_tracker_is_refused_before_any_work(monkeypatch):
    with pytest.raises(ConfigError, match="output.tracker: 'wandb' is not one of none, tensorboard, mlflow"):
        plan_run(CONFIGS / "default.yaml", {"output.tracker": "wandb"})
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r"output.tracker: mlflow needs the mlflow package; pip install 'fedstale\[mlflow\]'"):
        plan_run(CONFIGS / "default.yaml", {"output.tracker": "mlflow"})
    assert make_tracker("none", Path(".")) is None


def test_the_config_offers_exactly_the_trackers_there_are():
    import dataclasses  # pylint: disable=import-outside-toplevel

    from fedstale.config import OutputConfig  # pylint: disable=import-outside-toplevel
    from fedstale.tracking import TRACKERS  # pylint: disable=import-outside-toplevel

    field = next(f for f in dataclasses.fields(OutputConfig) if f.name == "tracker")
    assert tuple(field.metadata["choices"]) == tuple(TRACKERS)


def test_tensorboard_event_file_holds_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plan = plan_run(CONFIGS / "default.yaml", {**TINY, "output.plots": True, "output.tracker": "tensorboard"}, cwd=tmp_path)
    run_dir = run_local(plan)
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    rows = read_csv(run_dir / "metrics.csv")
    scalars = accumulator.Scalars("metrics/accuracy")
    assert [s.step for s in scalars] == [int(r["version"]) for r in rows] == [0, 3, 6]
    assert [s.value for s in scalars] == pytest.approx([float(r["accuracy"]) for r in rows], abs=1e-6)
    assert "metrics/virtual_time" in accumulator.Tags()["scalars"]
    assert sorted(accumulator.Tags()["images"]) == [
        "plots/accuracy_vs_time", "plots/staleness_hist", "plots/updates_per_client"
    ]


def test_mlflow_run_holds_params_metrics_and_files(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    plan = plan_run(CONFIGS / "default.yaml", TINY, cwd=tmp_path)
    run_dir = run_local(plan)
    monkeypatch.chdir(tmp_path)  # the default store: ./mlflow.db, artifacts in ./mlruns
    tracker = make_tracker("mlflow", run_dir)
    assert replay_run(run_dir, tracker) == 3
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "default" and run.info.status == "FINISHED"
    assert run.data.params["strategy.name"] == "fedbuff"
    assert run.data.params["stop.num_updates"] == "6"
    rows = read_csv(run_dir / "metrics.csv")
    history = client.get_metric_history(tracker.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(int(r["version"]), float(r["accuracy"])) for r in rows]
    files = {f.path for f in client.list_artifacts(tracker.run_id)}
    assert {"metrics.csv", "clients.csv", "config.yaml"} <= files
    assert list((tmp_path / "mlruns").rglob("metrics.csv"))
