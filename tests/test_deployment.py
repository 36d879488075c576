"""Deployment: the same app on a real SuperLink and real SuperNodes.

A :class:`fedstale.deployment.LocalDeployment` starts ``flower-superlink``
and ``flower-supernode`` processes on 127.0.0.1 (free ports, private
``FLWR_HOME`` with a ``config.toml`` federation), submits runs with
``flwr run . deploy --stream`` and stops every process it started by PID,
including those Flower starts in sessions of their own. Budgets are small:
on loopback one update costs a SuperNode ~7-20 s here (a new ClientApp
process per message, which imports torch, plus the SuperNode's 3 s idle
sleep), so each run makes a handful of updates.
"""

from __future__ import annotations

import csv
import json
import socket
import ssl
import time
from pathlib import Path

import pytest

from fedstale.certificates import write_credentials
from fedstale.deployment import LocalDeployment
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS
from tests.helpers import ROOT

NODES = 2
ALPHA = 0.6  # configs/fedasync.yaml
COMMON = {
    "data.num_clients": NODES,  # one client per SuperNode, as in a deployment
    "strategy.concurrency": NODES,
    "delay.clock": "wall",
    "output.checkpoint_every": 0,
    "output.plots": False,
}
FEDASYNC = {"config": "configs/fedasync.yaml", **COMMON, "stop.num_updates": 4, "evaluation.every": 2}
FEDBUFF = {"config": "configs/default.yaml", **COMMON, "strategy.buffer_size": 2, "stop.num_updates": 2,
           "evaluation.every": 1}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def _check_staleness_and_nodes(clients: list[dict[str, str]]) -> None:
    """τ = arrival − dispatch version; client p trained on the SuperNode with partition-id p."""
    for row in clients:
        assert int(row["staleness"]) == int(row["arrival_version"]) - int(row["dispatch_version"])
        assert row["node"] == row["client_id"], row
        assert row["accepted"] == "True" and row["reason"] == ""
        assert float(row["wall_duration"]) > 0 and int(row["num_examples"]) > 0
    assert {int(r["client_id"]) for r in clients} == set(range(NODES))
    assert int(clients[0]["staleness"]) == 0
    # the client still training when the first update is merged arrives stale
    assert max(int(r["staleness"]) for r in clients) >= 1


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One insecure SuperLink and two SuperNodes (partition-id 0 and 1)."""
    dep = LocalDeployment(tmp_path_factory.mktemp("deployment"))
    try:
        dep.start_superlink()
        for partition in range(NODES):
            dep.start_supernode(partition, NODES)
        dep.wait_for_supernodes(NODES)
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def runs(deployment):
    """FedAsync and FedBuff submitted at once to the same SuperNodes.

    FedAsync writes to an absolute ``run.output_dir``; FedBuff to the
    relative default-style ``deploy-results``, which lands in the
    SuperLink's working directory (where its ServerApp processes run).
    """
    out = deployment.superlink_dir.parent / "fedasync-results"
    started = time.monotonic()
    fedasync = deployment.submit(ROOT, {**FEDASYNC, "run.output_dir": str(out)})
    fedbuff = deployment.submit(ROOT, {**FEDBUFF, "run.output_dir": "deploy-results"})
    procs = {
        "fedasync": deployment.finish(fedasync, check=True),
        "fedbuff": deployment.finish(fedbuff, check=True),
    }
    seconds = time.monotonic() - started
    print(f"\n[deployment] FedAsync + FedBuff on {NODES} SuperNodes: {seconds:.1f} s end to end")
    dirs = {"fedasync": out / "fedasync", "fedbuff": deployment.superlink_dir / "deploy-results" / "default"}
    return procs, dirs


@pytest.mark.e2e
def test_fedasync_on_real_supernodes(runs):
    """4 updates, one version each, merged with α·s(τ) = 0.6/sqrt(1+τ)."""
    procs, dirs = runs
    assert "[LOG] finished: 4 versions, 4 updates" in procs["fedasync"].stdout
    metrics = _rows(dirs["fedasync"] / "metrics.csv")
    clients = _rows(dirs["fedasync"] / "clients.csv")
    assert tuple(metrics[0]) == METRICS_COLUMNS and tuple(clients[0]) == CLIENT_COLUMNS
    assert [int(r["version"]) for r in metrics] == [0, 2, 4]
    assert [int(r["updates"]) for r in metrics] == [0, 2, 4]
    assert [int(r["accepted"]) for r in metrics] == [0, 2, 4]
    assert len(clients) == 4
    assert [int(r["arrival_version"]) for r in clients] == [0, 1, 2, 3]
    _check_staleness_and_nodes(clients)
    for row in clients:
        assert float(row["weight"]) == pytest.approx(ALPHA / (1 + int(row["staleness"])) ** 0.5)
    # wall clock: virtual time is the time since the strategy started
    assert float(metrics[-1]["virtual_time"]) == pytest.approx(float(metrics[-1]["wall_time"]), abs=1.0)
    assert float(metrics[-1]["accuracy"]) > float(metrics[0]["accuracy"])


@pytest.mark.e2e
def test_fedbuff_on_real_supernodes_writes_to_the_superlink_directory(runs, deployment):
    """2 versions of K=2 updates, weights s(τ) = 1/sqrt(1+τ); relative output
    paths resolve against the SuperLink's working directory."""
    procs, dirs = runs
    stdout = procs["fedbuff"].stdout
    assert "[LOG] finished: 2 versions, 4 updates" in stdout
    assert f"results written to {dirs['fedbuff']}" in stdout
    metrics = _rows(dirs["fedbuff"] / "metrics.csv")
    clients = _rows(dirs["fedbuff"] / "clients.csv")
    assert [int(r["version"]) for r in metrics] == [0, 1, 2]
    assert [int(r["updates"]) for r in metrics] == [0, 2, 4]
    assert len(clients) == 4
    assert [int(r["arrival_version"]) for r in clients] == [0, 0, 1, 1]
    _check_staleness_and_nodes(clients)
    for row in clients:
        assert float(row["weight"]) == pytest.approx(1 / (1 + int(row["staleness"])) ** 0.5)
    # mean_staleness of a row is the mean over the updates merged since the previous row
    for version in (1, 2):
        merged = [int(r["staleness"]) for r in clients if int(r["arrival_version"]) == version - 1]
        assert float(metrics[version]["mean_staleness"]) == pytest.approx(sum(merged) / len(merged))


@pytest.mark.e2e
def test_stop_ends_every_process_it_started(runs, deployment):
    """SuperExecs run in sessions of their own; stop() ends them too."""
    before = _cmdlines(deployment.processes())
    assert sum("flower-superlink" in c for c in before) == 1
    assert sum("flower-supernode" in c for c in before) == NODES
    assert sum("flower-superexec" in c for c in before) == NODES + 1
    deployment.stop()
    assert deployment.processes() == []
    assert all(deployment.process(f"supernode-{p}").poll() is not None for p in range(NODES))


def _served_certificate(port: int, ca_file: Path) -> dict:
    """The SuperLink's certificate, verified against ``ca_file`` for 127.0.0.1."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert()


@pytest.mark.e2e
def test_tls_and_supernode_authentication(tmp_path):
    """TLS with a CA made by the test; only the registered SuperNode joins.

    The SuperLink runs with ``--enable-supernode-auth``; ``flwr supernode
    register`` (over TLS, verified with the CA in config.toml) adds SuperNode
    0's public key. A SuperNode with an unregistered key and one with no key
    are refused at connection (exit code 305) and never receive a task; the
    registered one runs a FedAsync experiment to the end.
    """
    creds = write_credentials(tmp_path / "certificates", supernodes=2)
    (registered_key, registered_pub), (stranger_key, _) = creds.supernode_keys
    dep = LocalDeployment(tmp_path / "secure", credentials=creds, supernode_auth=True)
    try:
        dep.start_superlink()
        cert = _served_certificate(dep.port, creds.ca_cert)
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
        node_id = dep.register_supernode(registered_pub)
        dep.start_supernode(0, 1, private_key=registered_key)
        stranger = dep.start_supernode(0, 1, private_key=stranger_key, name="unregistered")
        anonymous = dep.start_supernode(0, 1, name="anonymous")
        assert dep.wait_for_supernodes(1) == [node_id]
        assert stranger.wait(timeout=120) != 0 and anonymous.wait(timeout=120) != 0
        refusals = {
            "unregistered": "[code: 2004] Failed to activate SuperNode.",
            "anonymous": "[code: 2001] SuperNode authentication is enabled. "
            "All SuperNodes must be registered via the CLI.",
        }
        for name, reason in refusals.items():
            log = dep.log(name)
            assert "Exit Code: 305" in log and "Failed to initialize the connection to the SuperLink." in log
            assert reason in log, log
        out = tmp_path / "tls-results"
        config = {**FEDASYNC, "data.num_clients": 1, "strategy.concurrency": 1, "stop.num_updates": 2,
                  "evaluation.every": 1, "run.output_dir": str(out)}
        proc = dep.run(ROOT, config, check=True)
        assert "[LOG] finished: 2 versions, 2 updates" in proc.stdout
        clients = _rows(out / "fedasync" / "clients.csv")
        assert [(r["client_id"], r["node"], r["accepted"]) for r in clients] == [("0", "0", "True")] * 2
        listed = json.loads(dep.flwr("supernode", "list", "deploy", "--format", "json").stdout)
        assert [int(n["node-id"]) for n in listed["nodes"]] == [node_id]
        assert dep.activated_nodes() == [node_id]
        for name in refusals:
            assert "Receiving:" not in dep.log(name)
    finally:
        dep.stop()
    assert dep.processes() == []
