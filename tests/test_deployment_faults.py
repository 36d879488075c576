"""Faults on real processes: a SuperNode killed mid-run and restarted; a
warm ClientApp worker of ``fedstale superexec`` killed mid-task.

Each SuperNode joins over TLS with its own key pair, registered on the
SuperLink with ``flwr supernode register`` (as in the README's deployment steps), so
a SuperNode restarted with the same key comes back under the same node id
and the clients placed on it at start-up reach it again. The test kills
SuperNode 1 (SIGKILL, with its SuperExec and the ``flwr-clientapp`` that is
training) while it holds a TRAIN message, restarts it with the same
partition id and key, and checks that the lost task is a failure counted
in ``metrics.csv``, that client 1 is dispatched again and merged after the
restart, and that the run completes its version budget. The SuperNodes run
``fedstale superexec`` (warm workers); killing SuperNode 1 kills its
SuperExec and worker too.

The second test SIGKILLs only the worker serving a TRAIN message (DP-SGD
with top-k compression and error feedback, so the Context carries each
client's accountant and residual): that task is a failure row in
``clients.csv`` at once (the SuperExec replies with an error for it), a new
worker serves the node's next tasks, the run completes, each client's ε
keeps growing across its updates and every task pulls the Context the last
finished task pushed.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

import pytest

from fedstale.certificates import write_credentials
from fedstale.deployment import LocalDeployment
from fedstale.processes import kill_now
from fedstale.superexec.dispatcher import AFTER_THE_TASK, WHILE_REPLYING
from tests.helpers import ROOT

NODES = 2
VERSIONS = 40  # enough that client 0 alone cannot end the run before SuperNode 1 is back
# (the SuperLink re-admits it only after ~60 s of missed heartbeats, then its new
# SuperExec's worker imports torch and the app: 30 s at load 16 here; client 0
# on its warm worker makes a version every ~3.5 s, most of it the SuperNode's
# 3 s idle sleep, and with 16 versions the run ended without client 1)
BACKOFF_RETRIES = 8  # 2+4+8+16+30+30+30+30 = 150 s of patience, > 60 s + an update
TIMEOUT = 60  # s; a healthy update takes 17-40 s here at load 3-4, 55-73 s at load 6
RUN = {
    "config": "configs/fedasync.yaml",
    "data.num_clients": NODES,
    "strategy.concurrency": NODES,
    "delay.clock": "wall",
    "stop.num_updates": VERSIONS,
    "evaluation.every": 2,
    "comm.timeout": TIMEOUT,
    # retries while the node is down are answered at once ("Node Unavailable");
    # backing off 2, 4, 8, 16, 30, 30... s spans the ~60 s until it is re-admitted
    "comm.max_retries": BACKOFF_RETRIES,
    "comm.retry_backoff": 2.0,
    "comm.retry_backoff_max": 30.0,
    "output.checkpoint_every": 0,
    "output.plots": False,
}


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait(condition, timeout: float, what: str, dep: LocalDeployment):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f} s\n{dep.all_logs()}")


@pytest.mark.e2e
@pytest.mark.xdist_group("deployment-faults-supernode")
def test_supernode_killed_mid_run_and_restarted(tmp_path):
    started = time.monotonic()
    # Flower accepts a SuperNode key only over TLS
    creds = write_credentials(tmp_path / "certificates", supernodes=NODES)
    keys = creds.supernode_keys
    dep = LocalDeployment(tmp_path / "dep", credentials=creds)
    try:
        dep.start_superlink()
        node_ids = [dep.register_supernode(public) for _, public in keys]
        for partition, (private, _) in enumerate(keys):
            dep.start_supernode(partition, NODES, private_key=private)
        assert sorted(dep.wait_for_supernodes(NODES)) == sorted(node_ids)
        out = tmp_path / "results"
        clients_csv = out / "fedasync" / "clients.csv"
        proc = dep.submit(ROOT, {**RUN, "run.output_dir": str(out)})

        # Mid-run: an update was merged and SuperNode 1 is running a ClientApp
        # for a TRAIN message (it pulled the message, so its reply is lost).
        def training_on_node_1():
            if not any(r["accepted"] == "True" for r in _rows(clients_csv)):
                return None
            return [t for t in dep.superexec_running("supernode-1") if t[1] == "train"] or None

        _wait(training_on_node_1, 240, "no TRAIN ClientApp on SuperNode 1 after the first update", dep)
        merged_before_kill = len(_rows(clients_csv))
        killed = dep.kill_supernode("supernode-1")
        assert len(killed) >= 3  # the SuperNode, its SuperExec and the worker
        assert all(not _cmdline(pid) or "<defunct>" in _cmdline(pid) for pid in killed)
        restarted_at = time.monotonic()
        dep.restart_supernode(1, NODES, keys[1][0], node_ids[1])
        restart_seconds = time.monotonic() - restarted_at
        done = dep.finish(proc, timeout=900, check=True)
        seconds = time.monotonic() - started
    finally:
        dep.stop()
    assert dep.processes() == [], "a SuperLink, SuperNode or app process outlived the test"

    assert f"[LOG] finished: {VERSIONS} versions" in done.stdout
    metrics = _rows(out / "fedasync" / "metrics.csv")
    clients = _rows(clients_csv)
    failed = [r for r in clients if r["accepted"] != "True"]
    merged = [r for r in clients if r["accepted"] == "True"]
    print(
        f"\n[deployment faults] {seconds:.0f} s end to end; {merged_before_kill} rows before the kill; "
        f"back after {restart_seconds:.0f} s; "
        f"failures: {Counter((r['client_id'], r['reason'][:40]) for r in failed)}"
    )
    assert int(metrics[-1]["version"]) == VERSIONS and len(merged) == VERSIONS
    assert int(metrics[-1]["failures"]) == len(failed) >= 1
    assert int(metrics[-1]["updates"]) == len(clients)
    # The task SuperNode 1 held when killed (and any retry sent before the
    # restart): a timeout, or an error reply had the SuperLink noticed the
    # missed heartbeats first; never merged.
    lost = [r for r in failed if r["client_id"] == "1"]
    assert 1 <= len(lost) <= BACKOFF_RETRIES, failed
    for row in lost:
        assert row["reason"] == f"no reply within {TIMEOUT}s" or row["reason"].startswith("error reply"), row
        assert row["weight"] == ""
    # consecutive failures are at least the backoff apart (2 s, then doubling)
    noticed = sorted(float(r["arrival_time"]) for r in lost)
    assert all(b - a >= 2.0 for a, b in zip(noticed, noticed[1:])), noticed
    # Client 1 was dispatched again and trained on the restarted SuperNode.
    last_lost = max(int(r["task_id"]) for r in lost)
    later = [r for r in merged if r["client_id"] == "1" and int(r["task_id"]) > last_lost]
    assert later, clients
    assert all(r["node"] == "1" for r in later)
    # No row lost or doubled: task ids are unique, one row per finished task.
    ids = [int(r["task_id"]) for r in clients]
    assert len(ids) == len(set(ids))


KILL_RUN = {
    "config": "configs/fedasync.yaml",
    "data.num_clients": 2 * NODES,  # two clients per SuperNode: client c on node c mod 2
    "strategy.concurrency": 2 * NODES,
    "comm.max_inflight_per_node": 2,  # a node's next task waits at the SuperLink
    "delay.clock": "wall",
    # enough that SuperNode 0 alone does not end the run while SuperNode 1's
    # new worker imports torch, Opacus and the app (25 s at load 15 here)
    "stop.num_updates": 30,
    "evaluation.every": 30,
    "privacy.local.enabled": True,  # DP-SGD: the accountant lives in the Context
    "compression.method": "topk",  # with error feedback: so does the residual
    "output.checkpoint_every": 0,
    "output.plots": False,
}


@pytest.mark.e2e
@pytest.mark.xdist_group("deployment-faults-worker")
def test_warm_worker_killed_mid_task(tmp_path):
    dep = LocalDeployment(tmp_path / "dep")
    out = tmp_path / "results"
    clients_csv = out / "fedasync" / "clients.csv"
    attempts = []
    try:
        dep.start_superlink()
        for partition in range(NODES):
            dep.start_supernode(partition, NODES)
        dep.wait_for_supernodes(NODES)
        proc = dep.submit(ROOT, {**KILL_RUN, "run.output_dir": str(out)})

        def killed_mid_task():
            return [t for t in dep.superexec_tasks("supernode-1")
                    if t["status"] == "failed" and "killed by signal 9" in t["details"]
                    and not ended_before(t) and not while_replying(t)]

        def ended_before(task):
            # A kill between the worker's push of its reply and Context and its
            # word of it to the SuperExec: the task had ended (the SuperNode
            # refused the SuperExec's answer and the ServerApp merges the
            # worker's reply). Not a kill mid-task: try again.
            return task["details"].endswith(AFTER_THE_TASK)

        def while_replying(task):
            # A kill while the worker pushed its reply: the SuperNode may
            # forward the worker's half-pushed reply instead of the
            # SuperExec's error. Not a kill mid-training either: try again.
            return task["details"].endswith(WHILE_REPLYING)

        # SIGKILL the worker while its ClientApp trains; should the task end
        # in between (the worker then dies idle and is replaced), or the kill
        # land while it pushes its reply, try again
        while not killed_mid_task():
            assert proc.poll() is None and len(attempts) < 5, (attempts, dep.all_logs())
            running = _wait(
                lambda: [t for t in dep.superexec_running("supernode-1") if t[1] == "train"]
                if any(r["accepted"] == "True" for r in _rows(clients_csv)) else None,
                240, "no TRAIN task running on SuperNode 1's worker after the first update", dep,
            )
            task_id, _, pid = running[0]
            kill_now([pid])
            attempts.append((task_id, pid))
            _wait(lambda: killed_mid_task() or any(t["task_id"] == task_id for t in dep.superexec_tasks("supernode-1")),
                  120, f"no record of task {task_id}", dep)
        done = dep.finish(proc, timeout=900, check=True)
        tasks = {p: dep.superexec_tasks(f"supernode-{p}") for p in range(NODES)}
        log = dep.log("supernode-1-superexec")
    finally:
        dep.stop()
    assert dep.processes() == [], "a SuperLink, SuperNode or app process outlived the test"

    assert "[LOG] finished: 30 versions, " in done.stdout
    replying = [t for t in tasks[1] if while_replying(t)]
    (lost,) = [t for t in tasks[1] if t["status"] == "failed" and not ended_before(t) and not while_replying(t)]
    pid = lost["worker_pid"]
    assert (lost["task_id"], pid) in attempts
    assert lost["details"] == f"the ClientApp worker (PID {pid}) was killed by signal 9 (SIGKILL) during the task"
    assert f"worker {pid} was killed by signal 9 (SIGKILL) during task {lost['task_id']}; starting a new one" in log
    # ... a failure row at once (the SuperExec's error reply, not a timeout), never merged
    clients = _rows(clients_csv)
    failed = [r for r in clients if r["accepted"] != "True"]
    assert len(failed) == 1 + len(replying) and all(r["node"] == "1" and r["weight"] == "" for r in failed)
    reasons = [r["reason"] for r in failed]
    reasons.remove(f"error reply (8): fedstale superexec: {lost['details']}")
    for reason in reasons:  # one per kill while replying: either answer reached the ServerApp
        assert reason.startswith("error reply (3): Reply message objects are unavailable.") or reason in [
            f"error reply (8): fedstale superexec: {t['details']}" for t in replying], reason
    assert len([r for r in clients if r["accepted"] == "True"]) == 30
    # a new worker served the node's later tasks (it may be slow to start on
    # a loaded machine, so the other node may have made most of the updates)
    later = [t for t in tasks[1] if t["acquired_at"] > lost["acquired_at"]]
    assert later and all(t["worker_pid"] != pid for t in later)
    assert any(t["status"] == "completed" and t["message_type"] == "train" for t in later)
    # Context: every task pulls what the last finished task of its node pushed
    # (the killed task pushed nothing), and carries each client's residual
    for node, node_tasks in tasks.items():
        last_out = None
        for task in node_tasks:
            if last_out is not None:
                assert task["state_in"] == last_out, (node, task["task_id"])
            if task["status"] == "completed":
                last_out = task["state_out"]
            elif ended_before(task):
                last_out = None  # it pushed its own Context, but died before it told its digest
        assert all(int(r["client_id"]) % NODES == node for r in clients if r["node"] == str(node))
        trained = {int(r["client_id"]) for r in clients if r["node"] == str(node) and r["accepted"] == "True"}
        assert trained
        keys = set(node_tasks[-1]["state_keys"])
        assert {f"client.{c}.compression-residual" for c in trained} <= keys, keys
    # DP-SGD: each client's ε grows from update to update (its accountant
    # survives in the Context between the tasks of a warm worker)
    grown = 0
    for client in range(2 * NODES):
        eps = [float(r["epsilon"]) for r in clients if r["client_id"] == str(client) and r["accepted"] == "True"]
        assert eps == sorted(eps) and len(set(eps)) == len(eps), (client, eps)
        grown += len(eps) >= 3
    assert grown >= 2
