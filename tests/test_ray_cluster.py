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

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedstale.processes import free_port, pids_with_flwr_home, stop_processes
from fedstale.simulation.launcher import LocalFederation
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 (2 CPUs, own temp dir and ports); killed by PID after."""
    # Ray's socket paths must fit in 107 bytes: keep the temp dir short.
    temp = Path(tempfile.mkdtemp(prefix="fsrh-", dir="/tmp"))
    port = free_port()
    ports = {
        "--port": port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
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
                raise AssertionError(f"ray start failed:\n{(temp / 'ray-start.log').read_text()}")
            time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        yield f"127.0.0.1:{port}", temp
    finally:
        stop_processes({head.pid} | set(pids_with_flwr_home(str(temp))), grace=5)
        head.wait(timeout=30)
        log.close()
        left = pids_with_flwr_home(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
        assert left == [], "a Ray process outlived the test"


def _session_ready(temp: Path) -> bool:
    """The head wrote its session folder and its raylet is up."""
    return any(temp.glob("session_*/logs/raylet.out"))


def test_simulation_attaches_to_an_existing_ray_cluster(ray_head, tmp_path):
    """``RAY_ADDRESS`` makes ``flwr run`` use the running head: its workers log
    into the head's session, no private Ray instance is started, and the run
    writes the usual results."""
    address, temp = ray_head
    out = tmp_path / "results"
    fed = LocalFederation(tmp_path, env={"RAY_ADDRESS": address})
    try:
        proc = fed.run(
            ROOT,
            {"stop.num_updates": 10, "evaluation.every": 5, "output.plots": False,
             "output.checkpoint_every": 0, "run.output_dir": str(out)},
            federation_config="num-supernodes=2 client-resources-num-cpus=1",
            cwd=tmp_path,
            check=True,
        )
        private_sessions = list(fed.ray_tmpdir.glob("ray/session_*"))  # RAY_TMPDIR/ray
        workers = list(temp.glob("session_*/logs/worker-*.out"))
    finally:
        fed.stop()
    assert "[LOG] finished: 10 versions" in proc.stdout
    with (out / "default" / "clients.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 50
    assert private_sessions == []  # no Ray instance of its own
    assert len(workers) >= 2  # the ClientApp actors ran on the head
    assert fed.processes() == []
