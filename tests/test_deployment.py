"""Deployment: the same app on a real SuperLink and real SuperNodes.

A :class:`fedstale.deployment.LocalDeployment` starts ``flower-superlink``
and ``flower-supernode`` processes on 127.0.0.1 (free ports, private
``FLWR_HOME`` with a ``config.toml`` federation), submits runs with
``flwr run . deploy --stream`` and stops every process it started by PID,
including those Flower starts in sessions of their own. The SuperNodes run
``--isolation process`` with ``fedstale superexec`` next to them (warm
ClientApp workers, :mod:`fedstale.superexec`); one test runs Flower's own
path (the SuperNode starts ``flower-superexec``, one ``flwr-clientapp``
process per message). Budgets are small: with one client per SuperNode an
update still pays the SuperNode's 3 s idle sleep (and 17-40 s on Flower's
own path here), so each run makes a handful of updates.

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_fedasync_on_real_supernodes | final - initial accuracy (4 updates) | 0,1,2,3,4 | 0.539 | >= 0.3 | 0.239 |
"""

from __future__ import annotations

import csv
import importlib
import importlib.metadata
import json
import re
import socket
import ssl
import time
from pathlib import Path

import pytest
import tomli  # flwr's dependency; tomllib is Python >= 3.11 only
import yaml
from cryptography import x509

from fedstale import certificates, superexec
from fedstale.certificates import write_credentials
from fedstale.deployment import LocalDeployment
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS
from tests.helpers import ROOT, SEED_OVERRIDES

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
        assert dep.processes() == [], "a SuperLink, SuperNode or app process outlived the tests"


@pytest.fixture(scope="module")
def runs(deployment):
    """FedAsync and FedBuff submitted at once to the same SuperNodes.

    FedAsync writes to an absolute ``run.output_dir``; FedBuff to the
    relative default-style ``deploy-results``, which lands in the
    SuperLink's working directory (where its ServerApp processes run).
    """
    out = deployment.superlink_dir.parent / "fedasync-results"
    started = time.monotonic()
    fedasync = deployment.submit(ROOT, {**SEED_OVERRIDES, **FEDASYNC, "run.output_dir": str(out)})
    fedbuff = deployment.submit(ROOT, {**SEED_OVERRIDES, **FEDBUFF, "run.output_dir": "deploy-results"})
    procs = {
        "fedasync": deployment.finish(fedasync, check=True),
        "fedbuff": deployment.finish(fedbuff, check=True),
    }
    seconds = time.monotonic() - started
    print(f"\n[deployment] FedAsync + FedBuff on {NODES} SuperNodes: {seconds:.1f} s end to end")
    dirs = {"fedasync": out / "fedasync", "fedbuff": deployment.superlink_dir / "deploy-results" / "default"}
    return procs, dirs


@pytest.mark.e2e
def test_one_warm_worker_per_supernode_served_both_runs(runs, deployment):
    """Every task of both runs (QUERY and TRAIN) ran in the same worker process
    of its SuperNode's ``fedstale superexec``, and each task pulled the
    Context the previous one pushed."""
    for partition in range(NODES):
        tasks = deployment.superexec_tasks(f"supernode-{partition}")
        assert {t["status"] for t in tasks} == {"completed"}
        assert len({t["worker_pid"] for t in tasks}) == 1
        assert [t["worker_tasks"] for t in tasks] == list(range(1, len(tasks) + 1))
        # per run 2 QUERY messages (describe, prepare), then TRAIN messages
        assert sum(t["message_type"] == "query" for t in tasks) == 4
        assert sum(t["message_type"] == "train" for t in tasks) >= 2
        for run in {t["run_id"] for t in tasks}:
            mine = [t for t in tasks if t["run_id"] == run]
            for previous, task in zip(mine, mine[1:]):
                assert task["state_in"] == previous["state_out"]


@pytest.mark.e2e
def test_fedasync_on_real_supernodes(runs, learned):
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
    gain = float(metrics[-1]["accuracy"]) - float(metrics[0]["accuracy"])
    learned.at_least("final - initial accuracy (4 updates)", gain, 0.30)


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
    """SuperExecs and their workers run in sessions of their own; stop() ends them too."""
    before = _cmdlines(deployment.processes())
    assert sum("flower-superlink" in c for c in before) == 1
    assert sum("flower-supernode" in c and "--isolation process" in c for c in before) == NODES
    assert sum("flower-superexec" in c for c in before) == 1  # the SuperLink's, for ServerApps
    assert sum("-m fedstale.superexec" in c for c in before) == NODES
    assert sum("fedstale/superexec/worker.py" in c for c in before) == NODES
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
@pytest.mark.xdist_group("deployment-tls")
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


@pytest.mark.e2e
@pytest.mark.xdist_group("deployment-flower-superexec")
def test_flowers_own_superexec_still_runs_the_app(tmp_path):
    """Flower's default path: the SuperNode starts ``flower-superexec``, which
    starts a ``flwr-clientapp`` process per message."""
    dep = LocalDeployment(tmp_path / "stock", superexec="supernode")
    try:
        dep.start_superlink()
        dep.start_supernode(0, 1)
        dep.wait_for_supernodes(1)
        out = tmp_path / "stock-results"
        config = {**FEDASYNC, "data.num_clients": 1, "strategy.concurrency": 1, "stop.num_updates": 2,
                  "evaluation.every": 2, "run.output_dir": str(out)}
        proc = dep.run(ROOT, config, check=True)
        assert any("flower-superexec" in c and "--parent-pid" in c for c in _cmdlines(dep.supernode_pids("supernode-0")))
    finally:
        dep.stop()
    assert dep.processes() == []
    assert "[LOG] finished: 2 versions, 2 updates" in proc.stdout
    clients = _rows(out / "fedasync" / "clients.csv")
    assert [(r["client_id"], r["accepted"]) for r in clients] == [("0", "True")] * 2
    assert "--isolation" not in dep.supernode_command(0, 1, 9094)
    assert not (dep.log_dir / "supernode-0-superexec.log").exists()


# ------------------------------------------------------------------ docker/

DOCKER = ROOT / "docker"
FLWR_VERSION = importlib.metadata.version("flwr")
# Flower's own argument parsers for the three programs the images run.
PARSERS = {
    "flwr/superlink": "flwr.superlink.cli.flower_superlink:_parse_args_run_superlink",
    "flwr/supernode": "flwr.supernode.cli.flower_supernode:_parse_args_run_supernode",
    "flwr/superexec": "flwr.supercore.cli.flower_superexec:_parse_args",
}


def _compose(*names: str) -> dict:
    """The compose files merged the way ``docker compose -f a -f b`` does for
    the keys used here (a later service's ``command``/``secrets`` replace)."""
    merged: dict = {}
    for name in names:
        data = yaml.safe_load((DOCKER / name).read_text())
        for key, value in data.items():
            if key == "services":
                services = merged.setdefault("services", {})
                for service, fields in value.items():
                    services.setdefault(service, {}).update(fields)
            else:
                merged.setdefault(key, {}).update(value)
    return merged


def _dockerfile_base(path: Path) -> str:
    """The ``FROM`` image of a Dockerfile, with its ``ARG`` defaults filled in."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", path.read_text(), flags=re.M))
    (base,) = re.findall(r"^FROM (\S+)", path.read_text(), flags=re.M)
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def _base_image(service: dict) -> str:
    if "build" in service:
        return _dockerfile_base(DOCKER / service["build"]["context"] / service["build"]["dockerfile"])
    return service["image"]


def _parse(image: str, command: list[str], entrypoint: list[str] | None = None):
    """``command`` parsed by the flwr 1.41 program the image runs (or by
    ``fedstale superexec``'s parser for that entrypoint); fails on unknown flags."""
    if entrypoint == ["fedstale-superexec"]:
        parser = superexec.build_parser()
    else:
        assert entrypoint in (None, ["flower-superexec"]), entrypoint
        module, _, function = PARSERS[image.split(":")[0]].partition(":")
        parser = getattr(importlib.import_module(module), function)()
    try:
        args, unknown = parser.parse_known_args([str(c) for c in command])
    except SystemExit as err:  # argparse rejected a value
        raise AssertionError(f"{image} rejects {command}") from err
    assert unknown == [], f"{image} does not accept {unknown}"
    return args


def _node_config(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=") for item in text.split())}


@pytest.mark.parametrize(
    "files",
    [("compose.yml",), ("compose.yml", "with-tls.yml"), ("compose.yml", "with-flower-superexec.yml"),
     ("compose.yml", "with-tls.yml", "with-flower-superexec.yml")],
)
def test_compose_topology_and_flags(files):
    """One SuperLink, N SuperNodes with partition-id 0..N-1, a SuperExec per
    Runtime API: ``fedstale-superexec`` next to each SuperNode (Flower's
    ``flower-superexec`` with with-flower-superexec.yml), Flower's next to
    the SuperLink; every command is accepted by its program's parser; images
    are Flower's official ones at the installed version."""
    services = _compose(*files)["services"]
    kinds: dict[str, list[str]] = {}
    parsed = {}
    for name, service in services.items():
        image = _base_image(service)
        assert image.rsplit(":", 1)[1] == FLWR_VERSION == "1.41.0", (name, image)
        kinds.setdefault(image.split(":")[0], []).append(name)
        parsed[name] = _parse(image, service["command"], service.get("entrypoint"))
    warm = "with-flower-superexec.yml" not in files
    for name in kinds["flwr/superexec"]:
        program = services[name].get("entrypoint", ["flower-superexec"])
        expected = ["fedstale-superexec"] if warm and name.startswith("superexec-clientapp-") else ["flower-superexec"]
        assert program == expected, (name, program)
    assert len(kinds["flwr/superlink"]) == 1
    supernodes = sorted(kinds["flwr/supernode"])
    assert len(supernodes) == NODES  # the topology test_deployment starts
    link = parsed["superlink"]
    assert link.isolation == "process" and link.host == "0.0.0.0"
    assert f"{link.port}:{link.port}" in services["superlink"]["ports"]
    configs = [_node_config(parsed[n].node_config) for n in supernodes]
    assert configs == [{"partition-id": i, "num-partitions": NODES} for i in range(NODES)]
    runtime_apis = {f"superlink:{link.port}"}
    for name in supernodes:
        node = parsed[name]
        assert node.superlink == f"superlink:{link.port}" and node.isolation == "process"
        runtime_apis.add(f"{name}:{node.port}")
    # one SuperExec per Runtime API, each started after the process it serves
    superexecs = {parsed[n].runtime_api_address: n for n in kinds["flwr/superexec"]}
    assert set(superexecs) == runtime_apis and len(kinds["flwr/superexec"]) == len(runtime_apis)
    for address, name in superexecs.items():
        assert services[name]["depends_on"] == [address.split(":")[0]]
    tls = "with-tls.yml" in files
    assert link.insecure is not tls and all(parsed[n].insecure is not tls for n in supernodes)
    assert parsed[superexecs[f"superlink:{link.port}"]].insecure is not tls


def test_compose_tls_files_are_the_ones_the_generator_writes(tmp_path):
    """The secrets with-tls.yml mounts are the generator's files, under the
    paths the commands name, and the flags match LocalDeployment's."""
    compose = _compose("compose.yml", "with-tls.yml")
    creds = write_credentials(tmp_path, hosts=["superlink"])
    secrets = {k: Path(v["file"]) for k, v in compose["secrets"].items()}
    assert {p.parent for p in secrets.values()} == {Path("certificates")}
    assert {p.name for p in secrets.values()} == {creds.ca_cert.name, creds.server_cert.name, creds.server_key.name}
    assert "docker/certificates/" in (ROOT / ".gitignore").read_text()  # keys stay out of git
    dep = LocalDeployment(tmp_path / "dep", credentials=creds)
    local = dep.superlink_command()
    for name, service in compose["services"].items():
        mounted = {s["target"].removeprefix("/app/") for s in service.get("secrets", [])}
        paths = {c for c in service["command"] if str(c).startswith("certificates/")}
        assert paths == mounted, name
    link = compose["services"]["superlink"]["command"]
    flags = [c for c in link if str(c).startswith("--ssl")]
    assert flags == [c for c in local if c.startswith("--ssl")]
    cert = x509.load_pem_x509_certificate(creds.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "superlink" in names.get_values_for_type(x509.DNSName)


def test_superexec_image_installs_fedstale_without_flwr():
    """The Dockerfile's sed leaves a valid pyproject whose dependencies are
    fedstale's minus flwr (already in flwr/superexec) and copies what the
    package build needs."""
    text = (DOCKER / "superexec.Dockerfile").read_text()
    (pattern,) = re.findall(r"sed -i 's/(.*?)//' pyproject.toml", text)
    edited = re.sub(pattern, "", (ROOT / "pyproject.toml").read_text())  # sed works line by line, so does .*
    deps = tomli.loads(edited)["project"]["dependencies"]
    original = tomli.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in original if not d.startswith("flwr[")] == deps
    for copied in re.findall(r"^COPY --chown=app:app (.+) \S+$", text, flags=re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), path
    assert text.strip().endswith('ENTRYPOINT ["flower-superexec"]')
    # compose's ClientApp side runs the console script pip installs with fedstale
    scripts = tomli.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fedstale-superexec"] == "fedstale.superexec:main"


def test_certificate_command_writes_what_flower_loads(tmp_path, capsys):
    """``python -m fedstale.certificates`` (the README's command): the
    certificate names every host plus the loopback ones, private keys are
    0600, and Flower's own loaders accept the SuperNode keys."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    certificates.main([str(tmp_path), "--host", "203.0.113.5", "--host", "superlink", "--supernodes", "2"])
    assert "2 SuperNode key pairs" in capsys.readouterr().out
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["superlink", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.5", "127.0.0.1"]
    for name in ("ca.key", "server.key", "supernode-0", "supernode-1"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    for index in range(2):
        key = load_ssh_private_key((tmp_path / f"supernode-{index}").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
        assert try_load_public_key(tmp_path / f"supernode-{index}.pub").startswith(b"-----BEGIN PUBLIC KEY")
