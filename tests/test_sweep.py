"""Sweeps: spec validation, cell names, a run killed mid-way and resumed."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from fedstale.processes import pids_using, pids_with_env, stop_all
from fedstale.results import read_csv
from fedstale.sweep import (
    SWEEP_ID_VARIABLE,
    SweepError,
    is_finished,
    load_spec,
    plan_sweep,
    run_sweep,
)
from tests.helpers import ROOT, TINY_OVERRIDES as TINY



def write_spec(folder: Path, **spec) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({"config": str(ROOT / "configs" / "default.yaml"), **spec}, sort_keys=False))
    return path


def test_cells_are_the_product_of_cells_grid_and_seeds(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            name="demo",
            overrides={"stop.num_updates": 6},
            cells=[{"name": "FedBuff"}, {"name": "FedAsync", "config": str(ROOT / "configs" / "fedasync.yaml")}],
            grid={
                "strategy.concurrency": [2, 4],
                "delay": [{"name": "const", "delay.speed.distribution": "constant", "delay.speed.value": 0.01}, {"name": "pareto"}],
            },
            seeds=[0, 1],
            seed_data=True,
        )
    )
    cells = plan_sweep(spec, tmp_path / "out")
    assert len(cells) == 2 * 2 * 2 * 2
    first = cells[0]
    assert first.name == "FedBuff_concurrency-2_delay-const_seed-0"
    assert first.run_dir == (tmp_path / "out" / first.name).resolve()
    assert first.overrides == {
        "stop.num_updates": 6,
        "strategy.concurrency": 2,
        "delay.speed.distribution": "constant",
        "delay.speed.value": 0.01,
        "run.seed": 0,
        "data.seed": 0,
        "run.output_dir": str((tmp_path / "out").resolve()),
        "run.name": first.name,
    }
    assert first.labels == {"cell": "FedBuff", "strategy.concurrency": "2", "delay": "const", "seed": "0"}
    last = cells[-1]
    assert last.name == "FedAsync_concurrency-4_delay-pareto_seed-1"
    assert last.config_path == ROOT / "configs" / "fedasync.yaml"
    assert {"strategy.concurrency": 4, "run.seed": 1, "data.seed": 1}.items() <= last.overrides.items()
    assert "delay.speed.distribution" not in last.overrides


def test_a_bad_spec_is_one_error_before_any_run(tmp_path):
    with pytest.raises(SweepError) as err:
        load_spec(write_spec(tmp_path, grids={"a": [1]}, seeds=[0, 0], engine="ray", grid={"strategy.concurency": [1, 2]}))
    assert err.value.problems == [
        "grids: unknown key of a sweep spec (keys: name, config, overrides, grid, cells, seeds, seed_data, engine)",
        "engine: 'ray' is not one of flower, local",
        "grid.strategy.concurency: unknown field (a grid key with plain values must be a config "
        "field; for sets of overrides give mappings)",
        "seeds: must be a list of distinct integers >= 0, got [0, 0]",
    ]
    spec = load_spec(
        write_spec(
            tmp_path,
            overrides=TINY,
            grid={"strategy.alpha": [0.5, 2.0], "mix": [{"name": "a", "strategy.alpha": 0.3}, {"name": "b"}]},
        )
    )
    with pytest.raises(SweepError) as err:
        plan_sweep(spec, tmp_path / "out")
    assert err.value.problems == [
        "strategy.alpha: set by both strategy.alpha and mix; set it in one place",
        "cell alpha-2.0_mix-b: strategy.alpha: must be <= 1, got 2.0",
    ]
    assert not (tmp_path / "out").exists()


def _tiny_spec(tmp_path: Path) -> Path:
    return write_spec(
        tmp_path,
        name="tiny",
        overrides={**TINY, "stop.num_updates": 20, "evaluation.every": 10},
        grid={"strategy.buffer_size": [2, 3]},
        seeds=[0, 1],
    )


@pytest.mark.xdist_group("sweep-killed")
def test_killed_sweep_resumes_without_rerunning_finished_cells(tmp_path):
    """A 2x2 sweep on Ray (1 worker) is SIGKILLed once a cell has finished and
    another is running; the rerun skips the finished cells (their files are
    untouched), clears the interrupted one and runs the rest."""
    spec = _tiny_spec(tmp_path)
    out = tmp_path / "out"
    sweep_id = uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{SWEEP_ID_VARIABLE: sweep_id})
    command = [sys.executable, "-m", "fedstale.cli", "sweep", str(spec), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    names = ["buffer_size-2_seed-0", "buffer_size-2_seed-1", "buffer_size-3_seed-0", "buffer_size-3_seed-1"]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = [n for n in names if is_finished(out / n)]
            running = [n for n in names if (out / n / "config.yaml").exists() and n not in done]
            if done and running:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        ray_dirs = list(Path("/tmp").glob(f"fsw-{sweep_id[:8]}-*"))  # the killed sweep's Ray folder

        def sweep_processes() -> set[int]:
            # Ray's renamed processes (ray::DashboardAgent, ...) no longer show
            # the variable in /proc; they hold files in the Ray folder
            return {*pids_with_env(SWEEP_ID_VARIABLE, sweep_id), *(p for d in ray_dirs for p in pids_using(d))}

        stop_all(sweep_processes)
        left = sweep_processes()
        for folder in ray_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    assert left == set()
    assert len(ray_dirs) == 1
    finished = [n for n in names if is_finished(out / n)]
    interrupted = [n for n in names if (out / n).exists() and n not in finished]
    assert finished and interrupted, "the sweep was not caught mid-way"
    stamps = {n: (out / n / "model.pt").stat().st_mtime_ns for n in finished}
    csvs = {n: (out / n / "metrics.csv").read_bytes() for n in finished}

    stream = io.StringIO()
    result = run_sweep(load_spec(spec), out, workers=0, stream=stream)
    log = stream.getvalue()
    assert (
        f"4 cells, {len(finished)} finished (skipped), {len(interrupted)} interrupted (cleared), "
        f"{4 - len(finished)} to run in this process" in log
    )
    assert sorted(result.skipped) == sorted(finished)
    assert sorted(o.name for o in result.outcomes) == sorted(set(names) - set(finished))
    assert all(o.ok for o in result.outcomes)
    for name in finished:
        assert (out / name / "model.pt").stat().st_mtime_ns == stamps[name]
        assert (out / name / "metrics.csv").read_bytes() == csvs[name]
    for name in names:
        rows = read_csv(out / name / "metrics.csv")
        assert [int(r["version"]) for r in rows] == [0, 10, 20]
    assert f"4/4 done, 0 running, 0 failed | sweep tiny ended" in log
    # nothing left to do: a third run skips all four
    again = run_sweep(load_spec(spec), out, workers=0, stream=io.StringIO())
    assert sorted(again.skipped) == sorted(names) and again.outcomes == []


def test_a_failed_cell_is_reported_and_the_sweep_goes_on(tmp_path):
    """A cell whose data cannot be partitioned fails at run time; the others run."""
    spec = load_spec(
        write_spec(tmp_path, name="fails", overrides=TINY, grid={"data.min_partition_size": [10, 400]})
    )
    stream = io.StringIO()
    result = run_sweep(spec, tmp_path / "out", workers=0, stream=stream)
    assert [o.name for o in result.failed] == ["min_partition_size-400"]
    assert is_finished(tmp_path / "out" / "min_partition_size-10")
    error = (tmp_path / "out" / "min_partition_size-400" / "error.txt").read_text()
    assert error.startswith("ConfigError: invalid configuration:")
    assert "data.min_partition_size (400)" in error
    log = stream.getvalue()
    assert "[sweep] 1/2 done, 0 running, 1 failed | FAILED min_partition_size-400" in log
    assert "1 done, 1 failed (min_partition_size-400)" in log


def test_a_finished_cell_with_another_config_is_refused(tmp_path):
    spec_path = write_spec(tmp_path, overrides=TINY, seeds=[0])
    run_sweep(load_spec(spec_path), tmp_path / "out", workers=0, stream=io.StringIO())
    changed = write_spec(tmp_path, overrides={**TINY, "client.lr": 0.1}, seeds=[0])
    with pytest.raises(SweepError, match=r"cell seed-0: finished with another configuration \(client.lr\)"):
        run_sweep(load_spec(changed), tmp_path / "out", workers=0, stream=io.StringIO())
