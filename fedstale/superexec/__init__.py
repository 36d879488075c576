"""``fedstale superexec``: a SuperExec that keeps ClientApps alive between tasks.

A drop-in for ``flower-superexec`` on the ClientApp side of a SuperNode
started with ``--isolation process``: the same ``--runtime-api-address``,
``--insecure`` / ``--root-certificates``, ``--parent-pid``,
``--superexec-auth-secret-file`` and ``--health-server-address`` flags.
Where Flower's SuperExec starts one ``flwr-clientapp`` process per task
(which imports torch, loads the app and its data, serves one message and
exits), this one serves every task of a FAB in one long-lived worker
process that has imported torch and the app already and keeps what the app
caches (fedstale: the dataset, each client's partition tensors, the model
skeleton) in memory. Each task still goes through Flower's own Runtime API
calls (``AcquireTask``, ``PullTaskInput``, ``PullMessages``,
``PushMessages``, ``PushTaskOutput``), so the SuperNode, the SuperLink and
the Context it keeps are those of stock Flower. See
:mod:`fedstale.superexec.dispatcher` (the loop, faults) and
:mod:`fedstale.superexec.worker` (one task).

Run it as ``fedstale-superexec``, ``python -m fedstale.superexec`` or,
through fedstale's command line, ``fedstale superexec``::

    flower-supernode --insecure --superlink HOST:9092 --isolation process --port 9094 \\
        --node-config "partition-id=0 num-partitions=2"
    fedstale-superexec --insecure --runtime-api-address 127.0.0.1:9094

It refuses to start on a Flower version whose Runtime API it was not
tested against (:data:`TESTED_FLOWER_VERSIONS`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from typing import Any

TESTED_FLOWER_VERSIONS = ("1.41.0",)
"""Flower versions whose Runtime API (and the helpers of
``flwr/supernode/runtime/run_clientapp.py``) this SuperExec was tested against."""


def flower_version() -> str:
    """The installed Flower version."""
    return importlib.metadata.version("flwr")


def check_flower_version(version: str | None = None) -> str | None:
    """The one-line refusal for an untested Flower version, None if it was tested."""
    version = flower_version() if version is None else version
    if version in TESTED_FLOWER_VERSIONS:
        return None
    tested = ", ".join(TESTED_FLOWER_VERSIONS)
    return (
        f"fedstale superexec: Flower {version} is installed, but this SuperExec was tested only "
        f"against the Runtime API of Flower {tested}; use flower-superexec, or pass "
        "--allow-untested-flower to try anyway"
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``fedstale superexec`` to ``parser``."""
    address = parser.add_mutually_exclusive_group(required=True)
    address.add_argument("--runtime-api-address", dest="runtime_api_address",
                         help="address of the SuperNode's Runtime API, e.g. 127.0.0.1:9094 "
                         "(the SuperNode's --port)")
    address.add_argument("--appio-api-address", dest="runtime_api_address", help=argparse.SUPPRESS)
    parser.add_argument("--insecure", action="store_true",
                        help="connect to the Runtime API without TLS")
    parser.add_argument("--root-certificates", metavar="ROOT_CERT",
                        help="PEM root CA certificate to verify the Runtime API's TLS certificate")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process exits")
    parser.add_argument("--superexec-auth-secret-file", default=None,
                        help="file with the SuperExec shared secret (as for flower-superexec)")
    parser.add_argument("--health-server-address", default=None,
                        help="gRPC health server address (no TLS); not started if unset")
    parser.add_argument("--allow-runtime-dependency-installation", action="store_true",
                        dest="runtime_dependency_install", help=argparse.SUPPRESS)
    parser.add_argument("--task-timeout", type=_positive, default=3600.0, metavar="SECONDS",
                        help="a task still running after this long is failed and its worker "
                        "replaced (default 3600)")
    parser.add_argument("--poll-interval", type=_positive, default=0.05, metavar="SECONDS",
                        help="AcquireTask polling interval while tasks come in (default 0.05; "
                        "each poll costs the SuperNode ~3 ms of CPU)")
    parser.add_argument("--idle-poll-interval", type=_positive, default=0.5, metavar="SECONDS",
                        help="polling interval it slows down to after 10 s without a task "
                        "(default 0.5)")
    parser.add_argument("--max-workers", type=int, default=2, metavar="N",
                        help="warm workers kept, one per FAB, least recently used stopped "
                        "first (default 2)")
    parser.add_argument("--preload", metavar="MODULES", default=None,
                        help="comma-separated modules a new worker imports before its first "
                        "task (default: torch, Flower's ClientApp side and what fedstale's "
                        "ClientApp imports lazily)")
    parser.add_argument("--task-log", metavar="PATH", default=None,
                        help="append one JSON line per task (timings, worker, status) to PATH")
    parser.add_argument("--allow-untested-flower", action="store_true",
                        help="start even on a Flower version it was not tested against")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``fedstale-superexec`` / ``python -m fedstale.superexec``."""
    return configure_parser(argparse.ArgumentParser(
        prog="fedstale superexec",
        description="A SuperExec for a SuperNode started with --isolation process that serves "
        "its ClientApp tasks in warm worker processes (torch, the app and its data stay "
        "loaded between tasks).",
    ))


def add_parser(subparsers: Any, **kwargs: Any) -> argparse.ArgumentParser:
    """Register ``superexec`` on the ``fedstale`` command's subparsers (``kwargs``
    go to ``add_parser``, e.g. a ``formatter_class``); run it with :func:`command`."""
    parser = subparsers.add_parser(
        "superexec",
        help="warm ClientApp workers for a SuperNode (a flower-superexec drop-in)",
        description=build_parser().description,
        **kwargs,
    )
    return configure_parser(parser)


def command(args: argparse.Namespace) -> int:
    """Run the SuperExec for parsed ``args``; the exit status."""
    refusal = None if args.allow_untested_flower else check_flower_version()
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if args.runtime_dependency_install:
        print("fedstale superexec: runtime dependency installation is not supported (workers run "
              "in this environment); install the app's dependencies here, or use flower-superexec",
              file=sys.stderr)
        return 2
    if args.insecure and args.root_certificates:
        print("fedstale superexec: --insecure and --root-certificates exclude each other", file=sys.stderr)
        return 2
    from .dispatcher import DEFAULT_PRELOAD, Options, run_superexec  # pylint: disable=import-outside-toplevel

    secret = None
    if args.superexec_auth_secret_file is not None:
        from flwr.supercore.auth import load_superexec_auth_secret  # pylint: disable=import-outside-toplevel

        try:
            secret = load_superexec_auth_secret(secret_file=args.superexec_auth_secret_file)
        except ValueError as err:
            print(f"fedstale superexec: {err}", file=sys.stderr)
            return 2
    preload = DEFAULT_PRELOAD if args.preload is None else tuple(m for m in args.preload.split(",") if m)
    run_superexec(Options(
        runtime_api_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates=args.root_certificates,
        parent_pid=args.parent_pid,
        superexec_auth_secret=secret,
        health_server_address=args.health_server_address,
        poll_interval=args.poll_interval,
        idle_poll_interval=max(args.idle_poll_interval, args.poll_interval),
        task_timeout=args.task_timeout,
        max_workers=max(1, args.max_workers),
        preload=preload,
        task_log=args.task_log,
    ))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fedstale-superexec`` and ``python -m fedstale.superexec``."""
    return command(build_parser().parse_args(argv))
