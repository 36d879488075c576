"""Simulation on an existing Ray cluster: ``ray start --head`` on 127.0.0.1.

Flower 1.41's Ray backend calls ``ray.init()`` without an address, which
attaches to the cluster named by ``RAY_ADDRESS`` (or, failing that, to the
latest cluster started with ``ray start`` on the machine) instead of
starting a private one. Setting ``RAY_ADDRESS`` in the environment of the
first ``flwr run`` (which starts the local SuperLink) is all it takes; the
federation must then not set ``init-args-num-cpus``/``-num-gpus`` (the
cluster's resources are given to ``ray start``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from fedstale.processes import pids_with_flwr_home, stop_processes
from fedstale.simulation.launcher import LocalFederation, raise_if_failed
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e


class RayHead(NamedTuple):
    """The running head: its address, temp dir and ``ray start --block`` process."""

    address: str
    temp: Path
    process: subprocess.Popen

    def state(self) -> str:
        """Whether ``ray start`` still runs, and the end of its log and of
        Ray's record of processes that exited (for a failure message)."""
        code = self.process.poll()
        alive = "running" if code is None else f"exited with {code}"
        return f"ray start --block: {alive}\n{_head_log(self.temp)}"


@contextlib.contextmanager
def running_head() -> Iterator[RayHead]:
    """A Ray head on 127.0.0.1 (2 CPUs, own temp dir and ports); killed by PID after.

    Its ports come from outside the kernel's ephemeral range (see
    :func:`_reserved_ports`), so no other test's ``free_port()`` (nor a Ray
    or Flower process binding port 0) can take one of them between the
    choice and ``ray start`` binding it: a Ray agent that cannot bind its
    port exits, and ``ray start --block`` then stops the whole head.
    """
    # Ray's socket paths must fit in 107 bytes: keep the temp dir short.
    temp = Path(tempfile.mkdtemp(prefix="fsrh-", dir="/tmp"))
    flags = ("--port", "--ray-client-server-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    ports = dict(zip(flags, _reserved_ports(len(flags))))
    port = ports["--port"]
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--temp-dir", str(temp),
               "--include-dashboard", "false", "--disable-usage-stats"]
    for flag, value in ports.items():
        command += [flag, str(value)]
    # Every process of the cluster inherits this marker (see fedstale.processes).
    env = dict(os.environ, FLWR_HOME=str(temp), RAY_TMPDIR=str(temp))
    log = (temp / "ray-start.log").open("wb")
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _session_ready(temp):
            if head.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ray start failed:\n{_head_log(temp)}")
            time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        yield RayHead(f"127.0.0.1:{port}", temp, head)
    finally:
        stop_processes({head.pid} | set(pids_with_flwr_home(str(temp))), grace=5)
        head.wait(timeout=30)
        log.close()
        left = pids_with_flwr_home(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
        assert left == [], "a Ray process outlived the test"


def _reserved_ports(count: int) -> list[int]:
    """``count`` distinct ports free now, below the ephemeral range and above
    Ray's worker ports (10002-19999)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    chosen: list[int] = []
    for port in random.sample(range(20000, low), low - 20000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise AssertionError(f"fewer than {count} free ports in 20000-{low - 1}")


def _head_log(temp: Path) -> str:
    """The last lines of ``ray start``'s log and of Ray's process-exit log."""
    parts = []
    for path in [temp / "ray-start.log", *temp.glob("session_*/logs/ray_process_exit.log")]:
        if path.is_file():
            parts.append(f"--- {path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)


def _session_ready(temp: Path) -> bool:
    """The head wrote its session folder and its raylet is up."""
    return any(temp.glob("session_*/logs/raylet.out"))


UNREACHABLE = "Failed to connect to Ray cluster at"
"""Ray's words (``ray/_private/worker.py``) when ``ray.init`` found no GCS at the address."""


def test_simulation_attaches_to_an_existing_ray_cluster(tmp_path):
    """``RAY_ADDRESS`` makes ``flwr run`` use the running head: its workers log
    into the head's session, no private Ray instance is started, and the run
    writes the usual results.

    Twice in recent full suite runs on loaded cores (once in CI, once in a
    fresh clone here) the run's ``ray.init`` could not reach a head that had
    started: Ray gave up after 12 min. Ray is told to give up after 3 tries
    here (under 2 min); a run that could not reach its head is run once more
    on a new head, with a ``RuntimeWarning`` holding the first head's state
    and logs; any other failure, or a second unreachable head, fails the test.
    """
    for attempt in (1, 2):
        work = tmp_path / f"attempt-{attempt}"
        with running_head() as head:
            proc, private_sessions, workers, left = _run_attached(head, work)
            if attempt == 1 and UNREACHABLE in proc.stdout + proc.stderr:
                warnings.warn(f"flwr run could not reach the Ray head; running it on a new one\n{head.state()}",
                              RuntimeWarning, stacklevel=1)
                continue
            raise_if_failed(proc, logs=head.state())
            break
    assert "[LOG] finished: 10 versions" in proc.stdout
    with (work / "results" / "default" / "clients.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 50
    assert private_sessions == []  # no Ray instance of its own
    assert len(workers) >= 2  # the ClientApp actors ran on the head
    assert left == []


def _run_attached(head: RayHead, work: Path) -> tuple[subprocess.CompletedProcess[str], list[Path], list[Path], list[int]]:
    """The default experiment (10 versions) through ``flwr run`` with ``RAY_ADDRESS``
    naming ``head``: the run, the private Ray sessions it made, the head's
    worker logs, and the federation's processes left after it stopped."""
    work.mkdir(parents=True)
    # Ray tries 20 times for ~36 s each to reach a GCS (12 min); 3 tries say so in under 2 min.
    fed = LocalFederation(work, env={"RAY_ADDRESS": head.address, "RAY_NUM_REDIS_GET_RETRIES": "3"})
    try:
        proc = fed.run(
            ROOT,
            {"stop.num_updates": 10, "evaluation.every": 5, "output.plots": False,
             "output.checkpoint_every": 0, "run.output_dir": str(work / "results")},
            federation_config="num-supernodes=2 client-resources-num-cpus=1",
            cwd=work,
        )
        private_sessions = list(fed.ray_tmpdir.glob("ray/session_*"))  # RAY_TMPDIR/ray
        workers = list(head.temp.glob("session_*/logs/worker-*.out"))
    finally:
        fed.stop()
    return proc, private_sessions, workers, fed.processes()
