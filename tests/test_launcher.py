"""``LocalFederation.run`` (:mod:`fedstale.simulation.launcher`): a run whose
private Ray instance did not start is run once more, and only such a run; a
run whose log stream lost its end is judged by Flower's own status of it
(``flwr list --run-id``, :func:`~fedstale.simulation.launcher.with_run_status`).

The outputs below are what ``flwr run --stream`` prints (and ``flwr list
--format json`` for the status): Flower's
``Exit Code: 700`` line after the simulation engine's traceback, which ends
with Ray's message (``ray/_private/node.py``), and the ServerApp's first
``[LOG] experiment`` line, which names the run folder. ``subprocess.run`` is
replaced by a script of such outputs, so each case is exact and takes no
Ray, no SuperLink and no training.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import pytest

from fedstale.simulation import launcher
from fedstale.simulation.launcher import LocalFederation, ray_did_not_start

RAY_TIMEOUT = (
    "Exception: The current node timed out during startup. This could happen because "
    "some of the raylet failed to startup or the GCS has become overloaded."
)
EXIT_700 = "\x1b[91mERROR \x1b[0m:     Exit Code: 700"


def _output(*lines: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["flwr", "run"], code, stdout="\n".join(lines) + "\n", stderr="")


def _experiment_line(folder: Path, resumed: bool = False) -> str:
    return (
        "\x1b[92mINFO \x1b[0m:      [LOG] experiment 'configs/default.yaml': fedbuff buffered, "
        f"20 clients, C=5, logreg model (650 parameters) -> {folder}"
        + (" (resumed at version 10)" if resumed else "")
    )


def test_ray_did_not_start_names_rays_line():
    assert ray_did_not_start(_output("Traceback (most recent call last):", RAY_TIMEOUT, EXIT_700)) == RAY_TIMEOUT
    head = "RuntimeError: Failed to start GCS.  Last 0 lines of error files:"
    assert ray_did_not_start(_output(head, EXIT_700)) == head


def test_other_failures_and_successes_are_not_rays():
    assert ray_did_not_start(_output("ValueError: The max number of attempts (10) was reached", EXIT_700)) is None
    # Ray's words in a run that did not fail (a user's log line) are not a failure.
    assert ray_did_not_start(_output(RAY_TIMEOUT, "[LOG] finished: 10 versions")) is None
    assert ray_did_not_start(_output("[LOG] finished: 10 versions")) is None


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """A LocalFederation whose ``flwr run`` returns the outputs in ``script`` in turn."""
    script: list[subprocess.CompletedProcess[str]] = []
    calls: list[list[str]] = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return script.pop(0)

    monkeypatch.setattr(launcher, "ensure_local_superlink", lambda env, cwd: None)
    monkeypatch.setattr(launcher, "stage_app", lambda app_dir, apps: Path(app_dir))
    monkeypatch.setattr(launcher.subprocess, "run", fake_run)
    fed = LocalFederation(tmp_path / "fed")
    yield fed, script, calls
    fed.stop()


def test_a_run_whose_ray_did_not_start_runs_again_in_a_clean_folder(scripted, tmp_path):
    fed, script, calls = scripted
    folder = tmp_path / "results" / "default"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("version,accuracy\n")  # what the failed attempt opened
    done = _output(_experiment_line(folder), "[LOG] finished: 10 versions")
    script += [_output(_experiment_line(folder), RAY_TIMEOUT, EXIT_700), done]
    with pytest.warns(RuntimeWarning) as caught:
        proc = fed.run(tmp_path, {"stop.num_updates": 10}, check=True)
    assert proc is done and len(calls) == 2 and calls[0] == calls[1]
    assert str(caught[0].message) == (
        f"flwr run: Ray did not start ({RAY_TIMEOUT}); running it again after removing {folder}, "
        "which it had opened"
    )
    assert not folder.exists()


def test_a_resumed_runs_folder_is_kept(scripted, tmp_path):
    fed, script, calls = scripted
    folder = tmp_path / "results" / "default"
    folder.mkdir(parents=True)
    script += [_output(_experiment_line(folder, resumed=True), RAY_TIMEOUT, EXIT_700),
               _output("[LOG] finished: 20 versions")]
    with pytest.warns(RuntimeWarning, match=r"running it again$"):
        fed.run(tmp_path, {"run.resume": str(folder)})
    assert folder.is_dir() and len(calls) == 2


def test_ray_failing_twice_fails_the_run(scripted, tmp_path):
    fed, script, calls = scripted
    script += [_output(RAY_TIMEOUT, EXIT_700), _output(RAY_TIMEOUT, EXIT_700)]
    with pytest.warns(RuntimeWarning), pytest.raises(launcher.FlwrRunError, match="Exit Code: 700"):
        fed.run(tmp_path, check=True)
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("first", "retries"),
    [(_output("ValueError: bad data", EXIT_700), 1), (_output(RAY_TIMEOUT, EXIT_700), 0)],
    ids=["another-failure", "ray-retries-0"],
)
def test_a_run_is_not_run_again_for_any_other_failure_or_with_no_retries(scripted, tmp_path, first, retries):
    fed, script, calls = scripted
    script.append(first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "running it again"
        proc = fed.run(tmp_path, ray_retries=retries)
    assert proc is first and len(calls) == 1


STREAM_START = "\x1b[92mINFO \x1b[0m:      Starting logstream for run_id `4242`"


def _stream(*lines: str) -> subprocess.CompletedProcess[str]:
    """A ``flwr run --stream`` output: the run id on stderr, ``lines`` on stdout."""
    return subprocess.CompletedProcess(["flwr", "run"], 0, stdout="\n".join(lines) + "\n", stderr=STREAM_START + "\n")


def _listed(status: str, details: str) -> subprocess.CompletedProcess[str]:
    """What ``flwr list --run-id 4242 --format json`` prints (``flwr/cli/ls.py``, ``_to_json``)."""
    run = {"run-id": "4242", "status": status, "status-details": details, "elapsed": "00:00:09"}
    return subprocess.CompletedProcess(["flwr", "list"], 0, stdout=json.dumps({"success": True, "runs": [run]}), stderr="")


def test_a_failed_run_whose_stream_lost_its_exit_code_line_fails(scripted, tmp_path):
    fed, script, calls = scripted
    # the ServerApp's error line came through; the traceback and Exit Code did not
    lost = _stream("\x1b[93mWARNING \x1b[0m:   [LOG] strategy.name: 'fedbuf' is not one of fedasync")
    script += [lost, _listed("finished:failed", "Simulation failed with exception: bad strategy.name")]
    with pytest.raises(launcher.FlwrRunError) as caught:
        fed.run(tmp_path, check=True)
    assert calls[1] == [fed.flwr, "list", "--run-id", "4242", "--format", "json"]
    assert str(caught.value).startswith(
        "flwr run failed (flwr list: run 4242 finished:failed "
        "(Simulation failed with exception: bad strategy.name)):"
    )


def test_a_completed_run_whose_stream_lost_its_end_succeeds(scripted, tmp_path):
    fed, script, calls = scripted
    script += [_stream("[LOG] finished: 10 versions"), _listed("finished:completed", "N/A")]
    proc = fed.run(tmp_path, check=True)
    assert launcher.run_failed(proc) is None and len(calls) == 2
    assert proc.stdout.endswith("[LOG] finished: 10 versions\nflwr list: run 4242 finished:completed (N/A)\n")


@pytest.mark.parametrize(
    "end",
    [EXIT_700, "\x1b[92mINFO \x1b[0m:      [LOG] results written to /tmp/results/default"],
    ids=["exit-code", "results-written"],
)
def test_a_run_whose_output_tells_is_not_looked_up(scripted, tmp_path, end):
    fed, script, calls = scripted
    script.append(_stream("ValueError: bad data" if end == EXIT_700 else "[LOG] finished", end))
    proc = fed.run(tmp_path, ray_retries=0)
    assert len(calls) == 1
    assert (launcher.run_failed(proc) is None) == (end != EXIT_700)


def test_a_ray_failure_whose_exit_code_line_was_lost_still_runs_again(scripted, tmp_path):
    fed, script, calls = scripted
    done = _stream("[LOG] results written to /tmp/results/default")
    script += [_stream(RAY_TIMEOUT), _listed("finished:failed", f"Simulation failed with exception: {RAY_TIMEOUT}"), done]
    with pytest.warns(RuntimeWarning, match="Ray did not start"):
        proc = fed.run(tmp_path, check=True)
    assert proc is done and [c[1] for c in calls] == ["run", "list", "run"]


def test_no_answer_from_flwr_list_leaves_the_output_as_it_is(scripted, tmp_path):
    fed, script, calls = scripted
    lost = _stream("[LOG] experiment")
    script += [lost, subprocess.CompletedProcess(["flwr", "list"], 1, stdout="", stderr="connection refused")]
    assert fed.run(tmp_path) is lost and len(calls) == 2
