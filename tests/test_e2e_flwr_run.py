"""End to end: the real ``flwr run`` path (local SuperLink, Ray simulation engine).

One private federation (own FLWR_HOME and ports, see
:class:`fedstale.simulation.launcher.LocalFederation`) per pytest-xdist
worker serves the runs of this module and is stopped, with every process it
started, at the end. The tests form four ``xdist_group``s (the default run
and what is compared with it; batching; bad configs; client state) so that
they run on up to four workers at once (``tests/conftest.py``).

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_default_run_learns | final accuracy | 0,1,2,3,4 | 0.928 | >= 0.9 | 0.028 |
| test_dp_sgd_accountants_persist_in_flower_contexts | final accuracy | 0,1,2,3,4 | 0.892 | >= 0.8 | 0.092 |
| test_dp_sgd_accountants_persist_in_flower_contexts | least final client ε | 0,1,2,3,4 | 7.991 | >= 7.95 | 0.041 |
"""

from __future__ import annotations

import csv
import os
import re
import threading
import time
from pathlib import Path

import pytest

from fedstale.config import ConfigError
from fedstale.processes import kill_now
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS, WALL_COLUMNS
from fedstale.resume import load_resume_point
from fedstale.simulation.launcher import LocalFederation, flwr_run_status, run_failed, run_id_of
from tests.helpers import ROOT, SEED_OVERRIDES, config, run

pytestmark = pytest.mark.e2e

VERSIONS = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _reproducible(rows, drop=frozenset(WALL_COLUMNS) | {"node"}):
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """A private federation whose processes see an empty HOME.

    Runs start from ``work/cwd`` (the user's working directory), so the
    tests can check that fedstale writes nothing to HOME or the repository.
    """
    work = tmp_path_factory.mktemp("flwr")
    home = work / "home"
    home.mkdir()
    (work / "cwd").mkdir()
    fed = LocalFederation(work, env={"HOME": str(home)})
    fed.env.pop("MPLCONFIGDIR", None)  # set in this process by importing fedstale
    original_run = fed.run

    def run_here(app_dir, run_config=None, **options):
        # from the user's working directory, with the tests' seed (tests.helpers.SEED)
        return original_run(app_dir, {**SEED_OVERRIDES, **(run_config or {})}, cwd=work / "cwd", **options)

    fed.run = run_here  # type: ignore[method-assign]
    try:
        yield fed, work
    finally:
        fed.stop()
        assert fed.processes() == [], "a SuperLink or Ray process outlived the tests"


@pytest.fixture(scope="module")
def default_run(federation):
    """Plain ``flwr run . --stream`` (2 SuperNodes, Flower's default resources)."""
    fed, work = federation
    out = work / "default-results"
    proc = fed.run(ROOT, {"stop.num_updates": VERSIONS, "run.output_dir": str(out)}, check=True)
    return proc, out / "default"


@pytest.mark.xdist_group("e2e-default-run")
def test_default_run_writes_the_output_contract(default_run):
    """config.yaml, metrics.csv, clients.csv, checkpoints, model.pt and plots."""
    proc, run_dir = default_run
    assert f"[LOG] finished: {VERSIONS} versions" in proc.stdout
    assert (run_dir / "config.yaml").is_file()
    metrics = _rows(run_dir / "metrics.csv")
    clients = _rows(run_dir / "clients.csv")
    assert tuple(metrics[0]) == METRICS_COLUMNS
    assert tuple(clients[0]) == CLIENT_COLUMNS
    assert [int(r["version"]) for r in metrics] == list(range(0, VERSIONS + 1, 5))
    assert len(clients) == 5 * VERSIONS  # K = 5 accepted updates per version
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "resume.pt",  # output.resume_every (10): the latest resume point only
        "version_000050.pt",
        "version_000100.pt",
    ]
    assert (run_dir / "model.pt").stat().st_size > 100_000
    for name in ("accuracy_vs_time.png", "staleness_hist.png", "updates_per_client.png"):
        assert (run_dir / "plots" / name).read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.xdist_group("e2e-default-run")
def test_nothing_is_written_outside_the_working_directory(federation, default_run):
    """HOME stays empty: Flower's state is in FLWR_HOME, Matplotlib's cache in
    the working dir, fedstale's data cache where ``FEDSTALE_DATA_CACHE`` says
    (the suite's shared one, tests/conftest.py; a user's default is the
    working dir's ``.cache/fedstale``, tests/test_data_cache.py)."""
    _, work = federation
    written = sorted(str(p.relative_to(work / "home")) for p in (work / "home").rglob("*"))
    assert written == []
    assert (work / "cwd" / ".cache" / "matplotlib").is_dir()
    data_cache = Path(os.environ.get("FEDSTALE_DATA_CACHE") or work / "cwd" / ".cache" / "fedstale")
    assert {p.name.split("-")[0] for p in data_cache.iterdir()} >= {"digits", "partition"}


@pytest.mark.xdist_group("e2e-default-run")
def test_default_run_learns(default_run, learned):
    """FedBuff on digits through Flower's simulation engine reaches 90%."""
    _, run_dir = default_run
    final = _rows(run_dir / "metrics.csv")[-1]
    learned.at_least("final accuracy", float(final["accuracy"]), 0.90)
    assert float(final["virtual_time"]) > 0


@pytest.mark.xdist_group("e2e-default-run")
def test_same_rows_with_two_parallel_ray_workers(federation, default_run):
    """2 Ray workers training at once give the same rows as 1, wall time aside.

    Flower's default client resources (2 CPUs per ClientApp) give one worker
    on these 2-core machines; ``client-resources-num-cpus=1`` gives two. The
    rows also match an in-process run of the same experiment (and the
    in-process tests vary the number of nodes and the reply order).
    """
    fed, work = federation
    _, first = default_run
    out = work / "parallel-results"
    fed.run(
        ROOT,
        {"stop.num_updates": VERSIONS, "run.output_dir": str(out)},
        federation_config="num-supernodes=2 client-resources-num-cpus=1",
        check=True,
    )
    second = out / "default"
    for name in ("metrics.csv", "clients.csv"):
        a, b = _rows(first / name), _rows(second / name)
        assert len(a) == len(b) > 0
        assert _reproducible(a, drop=frozenset(WALL_COLUMNS)) == _reproducible(
            b, drop=frozenset(WALL_COLUMNS)
        )
    _, _, recorder = run(config(stop__num_updates=VERSIONS))
    in_process = [float(r["accuracy"]) for r in recorder.evaluations]
    assert [float(r["accuracy"]) for r in _rows(first / "metrics.csv")] == pytest.approx(in_process, abs=1e-9)


@pytest.mark.xdist_group("e2e-batching")
def test_same_rows_with_one_or_several_tasks_per_message(federation):
    """Through Flower's engine, one task per message and up to 4: the same
    rows in every column but wall time, on the compression config, whose
    error-feedback residuals live in the SuperNodes' Contexts and so shape
    every later update; the batches did form."""
    fed, work = federation
    runs = {}
    for tasks in (1, 4):
        out = work / f"tasks-per-message-{tasks}"
        values = {
            "config": "configs/compression.yaml", "stop.num_updates": 20, "output.plots": False,
            "comm.tasks_per_message": tasks, "run.output_dir": str(out),
        }
        proc = fed.run(ROOT, values, check=True)
        counts = re.search(r"transport: (\d+) training tasks in (\d+) messages", proc.stdout)
        assert counts, proc.stdout[-2000:]
        runs[tasks] = (out / "compression", int(counts[1]), int(counts[2]))
    (one, tasks_1, messages_1), (four, tasks_4, messages_4) = runs[1], runs[4]
    assert tasks_1 == messages_1 >= 100
    assert messages_4 < tasks_4
    for name in ("metrics.csv", "clients.csv"):
        a, b = _rows(one / name), _rows(four / name)
        assert len(a) == len(b) > 0
        assert _reproducible(a, drop=frozenset(WALL_COLUMNS)) == _reproducible(b, drop=frozenset(WALL_COLUMNS))


def _kill_serverapp(fed: LocalFederation) -> list[int]:
    """SIGKILL the process running the ServerApp (``flwr-simulation`` here)."""
    def runs_serverapp(pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"flwr-simulation" in cmdline or b"flwr-serverapp" in cmdline

    return kill_now([pid for pid in fed.processes() if runs_serverapp(pid)])


def _resume_version(run_dir: Path) -> int:
    try:
        return int(load_resume_point(run_dir).state["version"])
    except (ConfigError, OSError, EOFError, RuntimeError):
        return -1  # not written yet (or being replaced)


@pytest.mark.xdist_group("e2e-default-run")
def test_serverapp_killed_mid_run_and_resumed(federation, default_run):
    """SIGKILL the ServerApp after its resume point at version ≥ 20, then
    ``flwr run`` again with ``run.resume``: the version counter, metrics.csv
    and clients.csv continue with no row lost or doubled; in fact every row
    equals the uninterrupted default run's (virtual clock), wall time aside."""
    fed, work = federation
    _, uninterrupted = default_run
    out = work / "killed-results"
    run_dir = out / "default"
    values = {"stop.num_updates": VERSIONS, "run.output_dir": str(out), "output.plots": False}
    first = threading.Thread(target=fed.run, args=(ROOT, values), daemon=True)
    first.start()
    deadline = time.monotonic() + 600
    while _resume_version(run_dir) < 20 and first.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = _kill_serverapp(fed)
    assert killed, "no ServerApp process to kill"
    at_kill = _resume_version(run_dir)
    assert 20 <= at_kill < VERSIONS, "the run ended before it could be killed"
    assert not (run_dir / "model.pt").exists()

    proc = fed.run(ROOT, values | {"run.resume": str(run_dir)}, check=True)
    first.join(timeout=120)
    assert f"(resumed at version {at_kill})" in proc.stdout
    assert f"[LOG] finished: {VERSIONS} versions" in proc.stdout
    metrics = _rows(run_dir / "metrics.csv")
    assert [int(r["version"]) for r in metrics] == list(range(0, VERSIONS + 1, 5))
    clients = _rows(run_dir / "clients.csv")
    task_ids = [int(r["task_id"]) for r in clients]
    assert len(task_ids) == len(set(task_ids)) == int(metrics[-1]["updates"])
    for name in ("metrics.csv", "clients.csv"):
        assert _reproducible(_rows(run_dir / name)) == _reproducible(_rows(uninterrupted / name))


@pytest.mark.xdist_group("e2e-client-state")
def test_config_is_chosen_and_overridden_from_the_run_config(federation):
    """``config='configs/fedasync.yaml'`` plus an override reach the ServerApp."""
    fed, work = federation
    out = work / "fedasync-results"
    fed.run(
        ROOT,
        {
            "config": "configs/fedasync.yaml",
            "stop.num_updates": 40,
            "strategy.alpha": 0.5,
            "evaluation.every": 20,
            "run.output_dir": str(out),
        },
        check=True,
    )
    resolved = (out / "fedasync" / "config.yaml").read_text()
    assert "name: fedasync" in resolved and "alpha: 0.5" in resolved
    clients = _rows(out / "fedasync" / "clients.csv")
    assert len(clients) == 40  # FedAsync: one version per update
    assert {float(r["weight"]) <= 0.5 for r in clients} == {True}


@pytest.mark.xdist_group("e2e-bad-config")
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"strategy.name": "fedbuf"},
            "strategy.name: 'fedbuf' is not one of fedasync, fedbuff, fedavg, dynamic "
            "(did you mean 'fedbuff'?)",
        ),
        (
            {"data.num_clients": 100, "data.min_partition_size": 5},
            "data.partitioner 'dirichlet' could not give each of data.num_clients (100) clients "
            "at least data.min_partition_size (5) of 1437 examples",
        ),
        (
            {"data.num_clients": 5000},
            "data.num_clients (5000) is larger than the training pool (1437 examples)",
        ),
    ],
    ids=["unknown-strategy", "dirichlet-minimum", "more-clients-than-examples"],
)
def test_bad_config_fails_with_one_clear_error(federation, overrides, expected):
    """An invalid field, or data that cannot be partitioned as asked, names
    itself and what to change; nothing is written, no client trains."""
    fed, work = federation
    out = work / "bad-results"
    proc = fed.run(ROOT, {**overrides, "run.output_dir": str(out)})
    assert expected in proc.stdout
    assert run_failed(proc) is not None  # flwr's exit status is 0 regardless
    # what run_failed falls back on where the stream lost the Exit Code line
    assert flwr_run_status([fed.flwr], run_id_of(proc), fed.env)[0] == "finished:failed"
    assert "could not be pushed" not in proc.stdout and "error reply" not in proc.stdout
    assert not out.exists()


@pytest.mark.xdist_group("e2e-client-state")
def test_attacks_run_as_a_client_mod_on_the_real_path(federation):
    """Sign flippers (×5) act through ``attack_mod`` on Ray's ClientApps; a
    pre-aggregator pipeline given in the run config merges; by round 6 every
    attacker is quarantined and trusted less than any honest client."""
    fed, work = federation
    out = work / "robust-results"
    fed.run(
        ROOT,
        {
            "config": "configs/robustness.yaml",
            "strategy.aggregator": "clip>nnm>trimmed_mean",
            "strategy.trust.enabled": True,
            "attack.name": "sign_flip",
            "attack.boost": 5.0,
            "stop.num_updates": 6,
            "evaluation.every": 3,
            "run.output_dir": str(out),
        },
        check=True,
    )
    assert "aggregator: clip>nnm>trimmed_mean" in (out / "robustness" / "config.yaml").read_text()
    clients = _rows(out / "robustness" / "clients.csv")
    assert len(clients) == 6 * 20
    malicious = {r["client_id"] for r in clients if r["malicious"] == "True"}
    assert len(malicious) == 4
    last_round = [r for r in clients if r["dispatch_version"] == "5"]
    trust = {r["client_id"]: float(r["trust"]) for r in last_round}
    assert max(trust[c] for c in malicious) < min(t for c, t in trust.items() if c not in malicious)
    for row in last_round:
        if row["client_id"] in malicious:
            assert row["quarantined"] == "True" and row["accepted"] == "False"
    metrics = _rows(out / "robustness" / "metrics.csv")
    assert int(metrics[-1]["quarantined"]) >= 4


@pytest.mark.xdist_group("e2e-client-state")
def test_dp_sgd_accountants_persist_in_flower_contexts(federation, learned):
    """configs/dp_sgd.yaml on Ray: each client's ε grows over its 10 updates in the
    SuperNodes' Contexts, ends ≤ 8, the budget stops the run, ≥ 80% accuracy."""
    fed, work = federation
    out = work / "dp-results"
    fed.run(ROOT, {"config": "configs/dp_sgd.yaml", "run.output_dir": str(out)}, check=True)
    clients = _rows(out / "dp_sgd" / "clients.csv")
    per_client: dict[str, list[float]] = {}
    for row in clients:
        per_client.setdefault(row["client_id"], []).append(float(row["epsilon"]))
    assert sorted(per_client) == ["0", "1", "2", "3"]
    for epsilons in per_client.values():
        assert len(epsilons) == 10
        assert all(a < b for a, b in zip(epsilons, epsilons[1:]))
    finals = [epsilons[-1] for epsilons in per_client.values()]
    assert max(finals) <= 8.0  # the accountant's guarantee
    learned.at_least("least final client ε", min(finals), 7.95)
    final = _rows(out / "dp_sgd" / "metrics.csv")[-1]
    assert float(final["max_client_epsilon"]) <= 8.0
    learned.at_least("final accuracy", float(final["accuracy"]), 0.80)
