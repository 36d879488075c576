"""Flower's local SuperLink, started before ``flwr run`` with time to start on a loaded machine.

``flwr run`` on a ``:local:`` connection starts a local SuperLink itself
when none answers (``flwr.cli.local_superlink``), but gives it 15 s
(``LOCAL_SUPERLINK_STARTUP_TIMEOUT``, not configurable) and then kills it.
On 2 busy cores ``flower-superlink`` can take longer than that to import
and create its database. Killed half-way through its migrations, it leaves
``state.db`` with tables but no schema version, and every later start in
that ``FLWR_HOME`` fails ("table object_push_sessions already exists"):
one slow start fails every run after it.

:func:`ensure_local_superlink` runs the command Flower would run (same
flags, database, log file, ports from the same environment variables,
detached as Flower detaches it) when nothing answers on the local
SuperLink's ``/health``, and waits up to ``timeout`` for it. ``flwr run``
then finds it running and uses it, exactly as it uses one it started
itself. Flower offers no way to lengthen its wait, hence this module.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

STARTUP_TIMEOUT = 180.0
"""Seconds :func:`ensure_local_superlink` waits for the SuperLink's ``/health``."""

_DEFAULT_HTTP_PORT, _DEFAULT_CONTROL_PORT = "39091", "39093"  # flwr.cli.constant's defaults


def local_superlink_paths(env: Mapping[str, str]) -> tuple[Path, Path]:
    """``(state.db, superlink.log)`` of the local SuperLink of ``env``'s ``FLWR_HOME``.

    The folder is the one Flower's ``get_flwr_home`` finds (``FLWR_HOME``,
    else ``~/.flwr``), read from ``env`` instead of this process's environment.
    """
    from flwr.common.constant import FLWR_DIR, FLWR_HOME  # pylint: disable=import-outside-toplevel

    home = Path(env[FLWR_HOME]) if env.get(FLWR_HOME) else Path.home() / FLWR_DIR
    runtime = home / "local-superlink"
    return runtime / "state.db", runtime / "superlink.log"


def http_port(env: Mapping[str, str]) -> str:
    """The local SuperLink's HTTP port (``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``, as Flower reads it)."""
    return env.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", _DEFAULT_HTTP_PORT)


def local_superlink_command(env: Mapping[str, str], in_memory: bool = False) -> list[str]:
    """The ``flower-superlink`` command line ``flwr run`` uses for its local SuperLink."""
    from flwr.common.constant import ISOLATION_MODE_SUBPROCESS  # pylint: disable=import-outside-toplevel

    database, log_file = local_superlink_paths(env)
    control = env.get("FLWR_LOCAL_CONTROL_API_PORT", _DEFAULT_CONTROL_PORT)
    command = [
        "flower-superlink", "--insecure", "--simulation", "--isolation", ISOLATION_MODE_SUBPROCESS,
        "--control-api-address", f"127.0.0.1:{control}", "--host", "127.0.0.1", "--port", http_port(env),
        "--log-file", str(log_file), "--log-rotation-interval-hours", "24", "--log-rotation-backup-count", "7",
    ]
    return command if in_memory else [*command, "--database", str(database)]


def is_running(env: Mapping[str, str]) -> bool:
    """Whether the local SuperLink of ``env`` answers on ``/health`` (Flower's own probe)."""
    import httpx  # pylint: disable=import-outside-toplevel

    try:
        return httpx.get(f"http://127.0.0.1:{http_port(env)}/health", timeout=0.4).is_success
    except httpx.HTTPError:
        return False


def ensure_local_superlink(
    env: Mapping[str, str],
    cwd: str | Path,
    *,
    in_memory: bool = False,
    timeout: float = STARTUP_TIMEOUT,
    console: bool = True,
) -> int | None:
    """Start the local SuperLink of ``env`` in ``cwd`` unless it runs; wait until it answers.

    Parameters
    ----------
    env : Mapping[str, str]
        The environment ``flwr run`` will get (``FLWR_HOME``, the local ports, ``PATH``).
    cwd : str | Path
        Where ``flwr run`` would have started it (its working directory).
    in_memory : bool (default: False)
        A ``:local-in-memory:`` connection (no database).
    timeout : float (default: :data:`STARTUP_TIMEOUT`)
        Seconds to wait for ``/health``.
    console : bool (default: True)
        Keep the process's output in ``local-superlink/superlink.console``, so
        that a failed start says why (for a private, short-lived
        ``FLWR_HOME``); False discards it, as Flower does (a user's SuperLink
        lives long, and its log file is rotated, the console copy would not be).

    Returns
    -------
    int | None
        The PID started, or None if one was already running.

    Raises
    ------
    RuntimeError
        If ``flower-superlink`` exits before it answers, or does not answer
        within ``timeout`` (it is left running, so its migrations are never
        cut short; whoever owns ``FLWR_HOME`` stops it).
    """
    if is_running(env):
        return None
    from flwr.supercore.utils import get_popen_detach_kwargs  # pylint: disable=import-outside-toplevel

    _, log_file = local_superlink_paths(env)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # Flower discards the process's output; with ``console`` it goes to a file,
    # so that a start that fails can say why (the log file misses the traceback).
    path = log_file.with_name("superlink.console")
    with path.open("ab") if console else open(os.devnull, "wb") as out:
        try:
            process = subprocess.Popen(  # pylint: disable=consider-using-with
                local_superlink_command(env, in_memory),
                cwd=str(cwd),
                env=dict(env, FLWR_DISABLE_UPDATE_CHECK="1"),  # as flwr does: it checked already
                stdout=out,
                stderr=subprocess.STDOUT,
                **get_popen_detach_kwargs(),
            )
        except OSError as exc:
            raise RuntimeError(f"cannot launch flower-superlink for the local SuperLink: {exc}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = path.read_text(errors="replace")[-2000:] if console else ""
            raise RuntimeError(
                f"flower-superlink exited with code {process.returncode} before it answered "
                f"(log: {log_file}):\n{tail}"
            )
        if is_running(env):
            return process.pid
        time.sleep(0.2)
    raise RuntimeError(f"the local SuperLink did not answer within {timeout:.0f}s (log: {log_file})")


def ensure_default_connection_superlink(
    env: Mapping[str, str], cwd: str | Path, timeout: float = STARTUP_TIMEOUT
) -> int | None:
    """:func:`ensure_local_superlink` for a ``flwr run`` of this process's user, if its connection is local.

    Reads the default SuperLink connection of the Flower configuration
    (``FLWR_HOME/config.toml``, made with Flower's defaults if missing, as
    ``flwr run`` would) with Flower's own reader. A connection to an
    address is the user's SuperLink: nothing is started. An unreadable
    configuration is left for ``flwr run`` to report. ``env`` is this
    process's environment plus what ``flwr run`` is given (same ``FLWR_HOME``).

    Returns
    -------
    int | None
        The PID started, or None.
    """
    # pylint: disable=import-outside-toplevel
    import click
    from flwr.cli.constant import (
        LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE,
        LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE_IN_MEMORY,
    )
    from flwr.cli.flower_config import read_superlink_connection

    try:
        # Flower says on stdout when it creates the configuration; stdout is
        # the caller's (``fedstale run`` prints only the run folder there)
        with contextlib.redirect_stdout(sys.stderr):
            address = read_superlink_connection().address
    except click.ClickException:
        return None
    if address not in (LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE, LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE_IN_MEMORY):
        return None
    in_memory = address == LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE_IN_MEMORY
    return ensure_local_superlink(env, cwd, in_memory=in_memory, timeout=timeout, console=False)
