"""Finding the processes a launch started (:mod:`fedstale.processes`).

Ray renames its processes with ``setproctitle`` (``ray._raylet.setproctitle``,
what ``ray::DashboardAgent`` and ``ray::IDLE`` call), which zeroes what
``/proc/<pid>/cmdline`` and ``environ`` show: a Ray agent of a killed sweep
once outlived the suite because only its environment was looked at.
:func:`~fedstale.processes.pids_using` finds such a process by the files it
keeps open under its Ray folder. The children below are real processes,
renamed with Ray's own function.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedstale.processes import alive, pids_using, pids_with_env, stop_all

MARK = "FEDSTALE_TEST_PROCESSES"

RENAMED = """
import sys, time
import ray._raylet
log = open(sys.argv[1], "w")  # as a Ray process keeps its session's log open
ray._raylet.setproctitle("ray::DashboardAgent")
print("ready", flush=True)
time.sleep(120)
"""


def _start(code: str, *args: str, cwd: Path, value: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=dict(os.environ, **{MARK: value}),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


@pytest.fixture
def started():
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


def test_a_renamed_process_is_found_by_its_open_file_not_its_environment(tmp_path, started):
    ray_dir, elsewhere = tmp_path / "fsw-1234", tmp_path / "other"
    ray_dir.mkdir()
    elsewhere.mkdir()
    value = f"{os.getpid()}-{time.monotonic_ns()}"
    renamed = _start(RENAMED, str(ray_dir / "logs.out"), cwd=elsewhere, value=value)
    started.append(renamed)
    assert Path(f"/proc/{renamed.pid}/cmdline").read_bytes().startswith(b"ray::DashboardAgent\0")
    assert pids_with_env(MARK, value) == []  # its environment no longer shows
    assert pids_using(ray_dir) == [renamed.pid]
    assert pids_using(tmp_path / "fsw-12") == []  # a name that only starts the same
    (ray_dir / "logs.out").unlink()  # the folder removed first: "(deleted)" links still count
    assert pids_using(ray_dir) == [renamed.pid]
    stop_all(lambda: pids_using(ray_dir), grace=5)
    assert not alive(renamed.pid) and pids_using(ray_dir) == []


def test_a_process_is_found_by_its_working_directory(tmp_path, started):
    value = f"{os.getpid()}-{time.monotonic_ns()}"
    plain = _start("import time; print('ready', flush=True); time.sleep(120)", cwd=tmp_path, value=value)
    started.append(plain)
    assert pids_with_env(MARK, value) == [plain.pid]  # not renamed: both find it
    assert pids_using(tmp_path) == [plain.pid]
    assert pids_using(tmp_path / "sub") == []
