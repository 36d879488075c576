"""The ``fedstale`` command: help texts, run (local and through flwr), validate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedstale.cli import help_texts
from fedstale.results import METRICS_COLUMNS, read_csv
from fedstale.simulation.launcher import LocalFederation
from tests.helpers import ROOT, TINY_OVERRIDES

DOCS = ROOT / "docs" / "cli.md"
TINY = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY_OVERRIDES.items()]


def fedstale(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """``python -m fedstale.cli ARGS`` in ``cwd`` (this checkout on PYTHONPATH)."""
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), environment.get("PYTHONPATH", "")])
    environment.pop("MPLCONFIGDIR", None)
    return subprocess.run(
        [sys.executable, "-m", "fedstale.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_docs_reproduce_every_help_text():
    docs = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```text\n(.*?)```", docs, flags=re.S)
    for command, text in help_texts().items():
        assert text in blocks, f"docs/cli.md lacks the current `{command} --help`"
    assert len(blocks) == len(help_texts())


@pytest.mark.parametrize("command", ["", "run", "sweep", "report", "validate", "demo"])
def test_every_command_has_help(command, tmp_path):
    args = [command, "--help"] if command else ["--help"]
    proc = fedstale(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == help_texts()[f"fedstale {command}".strip()]
    assert proc.stdout.startswith(f"usage: fedstale {command}".rstrip())


@pytest.mark.xdist_group("cli-local-run")
def test_run_local_writes_under_the_working_directory(tmp_path):
    """``fedstale run --engine local`` from a folder elsewhere: results land under
    that folder, and stdout is the absolute run folder, first line and last."""
    proc = fedstale("run", "configs/default.yaml", *TINY, "--engine", "local", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    run_dir = tmp_path / "results" / "default"
    assert lines[0] == lines[-1] == str(run_dir)
    assert Path(lines[0]).is_absolute()
    metrics = read_csv(run_dir / "metrics.csv")
    assert tuple(metrics[0]) == METRICS_COLUMNS
    assert [int(r["version"]) for r in metrics] == [0, 3, 6]
    assert len(read_csv(run_dir / "clients.csv")) == 12  # 6 versions x K=2
    assert (run_dir / "model.pt").is_file()
    assert "results written to" in proc.stderr
    # a second run gets the next free folder
    again = fedstale("run", "configs/default.yaml", *TINY, "--engine", "local", cwd=tmp_path)
    assert again.stdout.splitlines()[0] == str(tmp_path / "results" / "default-2")


def test_run_reports_bad_input_with_exit_status_2(tmp_path):
    proc = fedstale("run", "configs/default.yaml", "strategy.name=fedbuf", "--engine", "local", cwd=tmp_path)
    assert proc.returncode == 2
    assert "strategy.name: 'fedbuf' is not one of fedasync, fedbuff, fedavg, dynamic (did you mean 'fedbuff'?)" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "results").exists()
    bad = fedstale("run", "configs/default.yaml", "stop.num_updates", "--engine", "local", cwd=tmp_path)
    assert bad.returncode == 2
    assert "override 'stop.num_updates': must look like dotted.name=value" in bad.stderr
    # data that cannot be partitioned: checked before the run starts, exit 2
    failed = fedstale("run", "configs/default.yaml", "data.num_clients=5000", "--engine", "local", cwd=tmp_path)
    assert failed.returncode == 2
    assert "data.num_clients (5000) is larger than the training pool (1437 examples)" in failed.stderr


def test_validate_prints_the_resolved_config_or_exits_2(tmp_path):
    ok = fedstale("validate", str(ROOT / "configs" / "fedasync.yaml"), "strategy.alpha=0.9", cwd=tmp_path)
    assert ok.returncode == 0
    assert "name: fedasync" in ok.stdout and "alpha: 0.9" in ok.stdout
    bad = fedstale("validate", str(ROOT / "configs" / "default.yaml"), "strategy.alpha=2", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stdout == "invalid configuration:\n  - strategy.alpha: must be <= 1, got 2.0\n"


@pytest.mark.e2e
@pytest.mark.xdist_group("cli-flwr-run")
def test_run_through_flwr_writes_under_the_working_directory(tmp_path):
    """``fedstale run`` (engine flower) with a private FLWR_HOME given by the
    environment; its SuperLink and Ray processes are stopped by PID."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with LocalFederation(tmp_path) as fed:
        proc = fedstale("run", "configs/default.yaml", "stop.num_updates=10", "evaluation.every=5",
                        "output.plots=false", cwd=cwd, env=fed.env)
        bad = fedstale("run", "configs/default.yaml", "data.num_clients=30", "data.min_partition_size=100",
                       cwd=cwd, env=fed.env)
    assert fed.processes() == []
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = cwd / "results" / "default"
    assert proc.stdout.splitlines()[0] == proc.stdout.splitlines()[-1] == str(run_dir)
    assert "[LOG] finished: 10 versions" in proc.stderr
    assert [int(r["version"]) for r in read_csv(run_dir / "metrics.csv")] == [0, 5, 10]
    assert len(read_csv(run_dir / "clients.csv")) == 50
    # a ServerApp that fails: `flwr run` exits 0, fedstale run exits 1
    assert bad.returncode == 1
    assert "flwr run failed" in bad.stderr
    assert "data.min_partition_size (100)" in bad.stderr


def test_demo_runs_are_valid_and_land_in_the_demo_folder(tmp_path):
    """The demo's two runs validate and write ./fedstale-demo/fedbuff and .../fedasync,
    300 client updates each (FedBuff: 60 versions of K=5)."""
    from fedstale.cli import DEMO_DIR, DEMO_RUNS
    from fedstale.runner import plan_run

    plans = [plan_run(config, {**overrides, "run.output_dir": DEMO_DIR}, cwd=tmp_path) for config, overrides in DEMO_RUNS]
    assert [p.run_dir for p in plans] == [tmp_path / DEMO_DIR / "fedbuff", tmp_path / DEMO_DIR / "fedasync"]
    buff, fedasync = (p.config for p in plans)
    assert (buff.strategy.name, fedasync.strategy.name) == ("fedbuff", "fedasync")
    assert buff.stop.num_updates * buff.strategy.buffer_size == fedasync.stop.num_updates == 300
