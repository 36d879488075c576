"""Resuming a run after the ServerApp stopped (``run.resume``, ``checkpoints/resume.pt``).

The ServerApp is stopped in the middle of a run by an exception raised while
it writes a ``clients.csv`` row past a resume point (so rows exist that the
resume point does not cover), then a second run continues it. With the
virtual clock the continued run must write exactly the rows of a run that
was never interrupted: no row lost, none doubled, same numbers (wall-time
columns aside). The real-process version (SIGKILL of the ServerApp of a
``flwr run``) is ``test_serverapp_killed_mid_run_and_resumed`` in
``tests/test_e2e_flwr_run.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedstale.client_app import app as client_app
from fedstale.config import ConfigError
from fedstale.resume import RESUME_FILE, load_resume_point
from fedstale.results import WALL_COLUMNS, RunRecorder, read_csv
from fedstale.server_app import run_experiment
from fedstale.simulation.local_grid import LocalGrid
from tests.helpers import CONFIGS, config


class Crash(Exception):
    """Stands for the ServerApp process dying."""


def _experiment(tmp_path: Path, **overrides):
    base = {
        "run__output_dir": str(tmp_path),
        "stop__num_updates": 12,
        "evaluation__every": 2,
        "output__resume_every": 3,
        "output__checkpoint_every": 4,
        "output__plots": False,
    }
    return config(**(base | overrides))


def _run(cfg) -> Path:
    return run_experiment(LocalGrid(client_app, num_nodes=2), cfg, CONFIGS / "default.yaml")


def _crash_after(monkeypatch, rows: int) -> None:
    """Make the ServerApp die while writing the ``rows``-th clients.csv row."""
    original = RunRecorder.on_update
    seen = {"n": 0}

    def on_update(self, row):
        seen["n"] += 1
        if seen["n"] == rows:
            raise Crash(f"killed at clients.csv row {rows}")
        original(self, row)

    monkeypatch.setattr(RunRecorder, "on_update", on_update)


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in WALL_COLUMNS} for r in rows]


STRATEGIES = {  # name: (overrides, clients.csv row at which the ServerApp dies)
    "fedbuff": ({}, 40),
    "fedasync": ({"strategy__name": "fedasync", "strategy__trust__enabled": True,
                  "strategy__filter__norm_bound": 3.0}, 9),
    "fedbuff-robust-momentum": ({"strategy__aggregator": "bucketing>centered_clipping",
                                 "strategy__server_momentum": 0.5}, 40),
    "fedavg-sync": ({"strategy__name": "fedavg", "strategy__mode": "sync"}, 75),
    "fedbuff-adam-oort-on_off": ({"strategy__server_optimizer": "adam", "strategy__server_lr": 0.01,
                                  "strategy__selection": "oort", "strategy__oort__epsilon": 0.3,
                                  "availability__model": "on_off", "availability__mean_online": 3.0,
                                  "availability__mean_offline": 1.0}, 40),
    "fedbuff-timer-seconds": ({"strategy__aggregation_delay": 0.2, "strategy__min_updates": 2,
                               "strategy__max_staleness_seconds": 3.0,
                               "strategy__staleness__name": "exponential",
                               "strategy__staleness__w_per_second": 0.9}, 40),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_resumed_run_writes_the_rows_of_an_uninterrupted_one(tmp_path, monkeypatch, name):
    """Crash past a resume point, resume: same CSV rows and final model as no crash."""
    overrides, crash_at = STRATEGIES[name]
    reference = _run(_experiment(tmp_path / "ref", **overrides))
    with monkeypatch.context() as patch:
        _crash_after(patch, crash_at)
        with pytest.raises(Crash):
            _run(_experiment(tmp_path / "crashed", **overrides))
    run_dir = tmp_path / "crashed" / "default"
    point = load_resume_point(run_dir)
    written = len(read_csv(run_dir / "clients.csv"))
    assert written == crash_at - 1
    # the crash left rows after the resume point, which resuming must drop
    assert point.csv_sizes["clients.csv"] < (run_dir / "clients.csv").stat().st_size
    assert 0 < point.state["version"] < 12
    assert not (run_dir / "model.pt").exists()

    resumed = _run(_experiment(tmp_path / "crashed", run__resume=str(run_dir), **overrides))
    assert resumed == run_dir
    for name_ in ("metrics.csv", "clients.csv"):
        got, want = read_csv(run_dir / name_), read_csv(reference / name_)
        assert _comparable(got) == _comparable(want), name_
    metrics = read_csv(run_dir / "metrics.csv")
    assert [int(r["version"]) for r in metrics] == [0, 2, 4, 6, 8, 10, 12]
    final = torch.load(run_dir / "model.pt")
    expected = torch.load(reference / "model.pt")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    task_ids = [int(r["task_id"]) for r in read_csv(run_dir / "clients.csv")]
    assert len(task_ids) == len(set(task_ids))


def test_a_finished_run_is_extended_as_if_it_had_run_longer(tmp_path):
    """Version budget 6, then resumed with 10: the updates of a 10-version run.

    The extended run keeps its evaluation at the old budget (version 6), so
    metrics.csv has that row more, and the next row's mean staleness covers
    the updates since version 6; everything else equals a 10-version run.
    """
    reference = _run(_experiment(tmp_path / "ref", stop__num_updates=10, evaluation__every=4))
    short = _run(_experiment(tmp_path / "ext", stop__num_updates=6, evaluation__every=4))
    # the last version is always a resume point, whatever resume_every
    assert load_resume_point(short).state["version"] == 6
    assert [r["version"] for r in read_csv(short / "metrics.csv")] == ["0", "4", "6"]
    _run(_experiment(tmp_path / "ext", stop__num_updates=10, evaluation__every=4,
                     run__resume=str(short)))
    got = read_csv(short / "metrics.csv")
    assert [int(r["version"]) for r in got] == [0, 4, 6, 8, 10]
    drop = {*WALL_COLUMNS, "mean_staleness"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in got if r["version"] != "6"] == [
        {k: v for k, v in r.items() if k not in drop} for r in read_csv(reference / "metrics.csv")
    ]
    assert _comparable(read_csv(short / "clients.csv")) == _comparable(
        read_csv(reference / "clients.csv")
    )


def test_resume_needs_a_resume_point(tmp_path):
    """A folder that is not a run, or a run saved with resume_every 0: one clear error."""
    with pytest.raises(ConfigError, match="run.resume: run folder .* does not exist"):
        _run(_experiment(tmp_path, run__resume=str(tmp_path / "nothing")))
    plain = _run(_experiment(tmp_path, stop__num_updates=2, output__resume_every=0))
    assert not (plain / RESUME_FILE).exists()
    with pytest.raises(ConfigError, match=r"has no checkpoints/resume.pt; .*resume_every: 0"):
        _run(_experiment(tmp_path, run__resume=str(plain)))


def test_resume_refuses_another_experiment(tmp_path):
    """Changing what the run computes is refused, naming the field; stop.* may change."""
    run_dir = _run(_experiment(tmp_path, stop__num_updates=3))
    with pytest.raises(ConfigError) as err:
        _run(_experiment(tmp_path, stop__num_updates=5, run__resume=str(run_dir),
                         strategy__buffer_size=4, run__seed=1))
    text = str(err.value)
    assert "strategy.buffer_size: the interrupted run used 5, this one 4" in text
    assert "run.seed: the interrupted run used 0, this one 1" in text
    assert "stop.num_updates" not in text
    before = (run_dir / "clients.csv").read_bytes()
    assert before  # nothing was cut or rewritten by the refused resume


def test_resume_refuses_a_changed_results_file(tmp_path):
    """A clients.csv shorter than at the resume point cannot be continued."""
    run_dir = _run(_experiment(tmp_path, stop__num_updates=3))
    path = run_dir / "clients.csv"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="clients.csv holds 100 bytes but held"):
        _run(_experiment(tmp_path, stop__num_updates=5, run__resume=str(run_dir)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"privacy__local__enabled": True, "privacy__local__noise_multiplier": 1.0},
         "run.resume: each client's DP-SGD accountant lives in its SuperNode's Context"),
        ({"privacy__secagg__enabled": True},
         "run.resume: secure-aggregation groups in flight cannot be re-formed"),
    ],
)
def test_resume_is_refused_where_client_state_matters(tmp_path, overrides, message):
    """DP-SGD accountants and secure groups live on the clients: no resume."""
    with pytest.raises(ConfigError, match=message):
        _experiment(tmp_path, run__resume=str(tmp_path), **overrides)
