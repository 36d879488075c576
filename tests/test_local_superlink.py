"""The local SuperLink that ``LocalFederation`` starts before ``flwr run`` (fedstale.simulation.local_superlink).

Flower's ``flwr run`` gives a local SuperLink 15 s to start and then kills
it; one killed while it creates its database leaves ``state.db`` unusable.
A fresh clone's suite on loaded cores lost four end-to-end tests to that
(every run after the first slow start failed with "flower-superlink exited
with code 1"). These tests pin that fedstale starts Flower's own command,
that ``flwr run`` then uses it, and that a SuperLink that cannot start says
why.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import click
import pytest

from fedstale.processes import free_port, pids_with_flwr_home, stop_all
from fedstale.simulation.launcher import LocalFederation
from fedstale.simulation.local_superlink import (
    ensure_default_connection_superlink,
    ensure_local_superlink,
    is_running,
    local_superlink_command,
)


def test_the_command_is_the_one_flwr_run_starts(monkeypatch, tmp_path):
    """Same flags, ports, database and log file as ``flwr.cli.local_superlink``."""
    import flwr.cli.local_superlink as flower

    env = {
        "FLWR_HOME": str(tmp_path / "home"),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "41001",
        "FLWR_LOCAL_CONTROL_API_PORT": "41003",
    }
    monkeypatch.setenv("FLWR_HOME", env["FLWR_HOME"])
    # Flower reads the two ports from the environment when it is imported
    monkeypatch.setattr(flower, "LOCAL_SUPERLINK_HTTP_API_PORT", "41001")
    monkeypatch.setattr(flower, "LOCAL_CONTROL_API_ADDRESS", "127.0.0.1:41003")
    started = []

    def record(command, **kwargs):
        started.append(command)
        raise OSError("recorded")

    monkeypatch.setattr(flower.subprocess, "Popen", record)
    for in_memory in (False, True):
        with pytest.raises(click.ClickException, match="recorded"):
            flower._start_local_superlink(in_memory)  # pylint: disable=protected-access
        assert local_superlink_command(env, in_memory) == started[-1]
    assert "--database" in started[0] and "--database" not in started[1]


def test_started_once_and_used_by_flwr_run(tmp_path):
    """The first call starts it (a PID that answers /health), the second finds it; stop() ends it."""
    with LocalFederation(tmp_path) as fed:
        pid = ensure_local_superlink(fed.env, tmp_path)
        assert pid is not None and is_running(fed.env)
        assert pid in fed.processes()
        assert ensure_local_superlink(fed.env, tmp_path) is None
    assert not is_running(fed.env) and not pids_with_flwr_home(str(fed.flwr_home))


def test_a_superlink_that_cannot_start_says_why(tmp_path):
    """A ``state.db`` with tables but no schema version (what a start killed half-way leaves) is refused, and the error says so."""
    home = tmp_path / "flwr-home"
    (home / "local-superlink").mkdir(parents=True)
    with sqlite3.connect(home / "local-superlink" / "state.db") as db:
        db.execute("CREATE TABLE run (run_id INTEGER PRIMARY KEY)")
    env = {
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
    }
    try:
        with pytest.raises(RuntimeError, match=r"exited with code 1 before it answered(.|\n)*schema does not match"):
            ensure_local_superlink(env, tmp_path, timeout=120)
    finally:
        stop_all(lambda: pids_with_flwr_home(str(home)))


def test_fedstale_run_starts_a_local_connections_superlink_only(monkeypatch, tmp_path, capsys):
    """``fedstale run``'s check: Flower's default connection (``:local:``) gets its SuperLink
    started, quietly on stdout; a connection to an address is the user's and is left alone."""
    home = tmp_path / "flwr-home"
    env = {
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
    }
    monkeypatch.setenv("FLWR_HOME", str(home))
    try:
        pid = ensure_default_connection_superlink(env, tmp_path)
        assert pid is not None and is_running(env) and pid in pids_with_flwr_home(str(home))
        assert capsys.readouterr().out == ""  # Flower's "Created default configuration" went to stderr
        assert ensure_default_connection_superlink(env, tmp_path) is None
    finally:
        stop_all(lambda: pids_with_flwr_home(str(home)))
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "remote"\n\n[superlink.remote]\naddress = "127.0.0.1:1"\ninsecure = true\n'
    )
    from flwr.cli.flower_config import read_superlink_connection

    assert read_superlink_connection().address == "127.0.0.1:1"  # Flower reads it as the default
    assert ensure_default_connection_superlink(env, tmp_path) is None and not is_running(env)
