"""The ``fedstale`` command: run, sweep, report, validate, demo, superexec.

``fedstale COMMAND --help`` describes each command (``docs/cli.md`` has the
same text). Exit status: 0 on success, 1 when a run (or a sweep's cell)
failed, 2 for bad input (an invalid config or spec, reported before any
work starts).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import superexec as superexec_cli

HELP_WIDTH = 88
"""Columns of the help texts (fixed, so that ``docs/cli.md`` matches them anywhere)."""

DEMO_DIR = "fedstale-demo"
"""Folder of ``fedstale demo``, in the working directory."""

DEMO_RUNS = (
    ("configs/default.yaml", {"run.name": "fedbuff", "stop.num_updates": 60, "evaluation.every": 5}),
    ("configs/fedasync.yaml", {"run.name": "fedasync", "stop.num_updates": 300, "evaluation.every": 25}),
)
"""``fedstale demo``: FedBuff (60 versions of K=5) and FedAsync (300 versions), 300 client updates each."""

TRACKER_CHOICES = ("none", "tensorboard", "mlflow")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=HELP_WIDTH, max_help_position=30)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fedstale`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="fedstale",
        description="Asynchronous, buffered and synchronous federated learning experiments\n"
        "(FedAsync, FedBuff, FedAvg) on a virtual clock.",
        epilog="Exit status: 0 success, 1 a run or sweep cell failed, 2 invalid input.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run one experiment",
        description="Run one experiment and write its run folder under the working directory\n"
        "(run.output_dir, default results/, is resolved here). The absolute path of the run\n"
        "folder is printed first and last on stdout; the run's log goes to stderr.",
        formatter_class=_Formatter,
    )
    _config_arguments(run)
    run.add_argument(
        "--engine",
        choices=("flower", "local"),
        default="flower",
        help="flower: `flwr run` with your Flower setup (FLWR_HOME, local SuperLink, Ray); "
        "local: in this process, no SuperLink or Ray (default: flower)",
    )
    run.add_argument("--app", metavar="DIR", help="Flower app folder for --engine flower "
                     "(default: fedstale's source checkout)")
    _tracker_arguments(run)

    sweep = sub.add_parser(
        "sweep",
        help="run a grid of experiments (resumable, in parallel)",
        description="Run every cell of a sweep spec (see docs/experiments.md): one run folder per\n"
        "cell under the sweep's folder. Finished cells are skipped, interrupted ones rerun;\n"
        "cells run in parallel as Ray tasks (RAY_ADDRESS names a cluster, otherwise a local\n"
        "Ray instance of --workers CPUs). A failed cell is reported and the sweep goes on.",
        formatter_class=_Formatter,
    )
    sweep.add_argument("spec", help="sweep spec YAML, e.g. simulations/experiments/delays.yaml")
    sweep.add_argument("--out", metavar="DIR", help="the sweep's folder (default: results/<spec name>)")
    sweep.add_argument("--workers", type=int, metavar="N",
                       help="cells at once on a local Ray instance (default: CPU count; "
                       "0: one after the other in this process, without Ray)")
    sweep.add_argument("--seeds", type=int, metavar="N",
                       help="run only the first N seeds of the spec")
    sweep.add_argument("--app", metavar="DIR", help="Flower app folder (spec engine: flower)")
    _tracker_arguments(sweep)

    report = sub.add_parser(
        "report",
        help="markdown report with figures of runs and sweeps",
        description="Write a markdown report with PNG figures of run folders and sweep folders:\n"
        "accuracy vs virtual time (mean and min-max over seeds), time and updates to each\n"
        "target accuracy, staleness, participation, client execution times, fairness.\n"
        "Runs whose configs differ only in run.seed/data.seed are one group.",
        formatter_class=_Formatter,
    )
    report.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="run or sweep folders")
    report.add_argument("-o", "--out", metavar="DIR",
                        help="output folder (default: <dir>/report for one folder, else ./report)")
    report.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9], metavar="ACC",
                        help="target accuracies (default: 0.8 0.9)")
    report.add_argument("--title", help="report title (default: from the folders)")

    validate = sub.add_parser(
        "validate",
        help="check a config and print it resolved",
        description="Validate an experiment and print it resolved, or its errors (exit 2)\n"
        "(the same as python -m fedstale.config).",
        formatter_class=_Formatter,
    )
    _config_arguments(validate)

    sub.add_parser(
        "demo",
        help="a one-minute tour: FedBuff vs FedAsync, then a report",
        description=f"Run FedBuff and FedAsync on configs/default.yaml's clients with a small budget\n"
        f"(300 client updates each) in this process into ./{DEMO_DIR}/, then report both.",
        formatter_class=_Formatter,
    )
    superexec_cli.add_parser(sub, formatter_class=_Formatter)
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML experiment, e.g. configs/default.yaml")
    parser.add_argument("overrides", nargs="*", metavar="field=value",
                        help="dotted field overrides (YAML values), e.g. strategy.concurrency=5")


def _tracker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracker", choices=TRACKER_CHOICES,
                        help="also log to TensorBoard (<run>/tensorboard) or MLflow: "
                        "the override output.tracker=NAME")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI: the override output.tracking_uri=URI "
                        "(default: sqlite ./mlflow.db, artifacts ./mlruns)")


def _tracker_overrides(args: argparse.Namespace) -> dict[str, str]:
    """``--tracker``/``--tracking-uri`` as the config overrides they stand for."""
    overrides = {}
    if args.tracker:
        overrides["output.tracker"] = args.tracker
    if args.tracking_uri:
        overrides["output.tracking_uri"] = args.tracking_uri
    return overrides


def help_texts() -> dict[str, str]:
    """``--help`` of ``fedstale`` and of each subcommand, keyed by command line."""
    parser = build_parser()
    texts = {"fedstale": parser.format_help()}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # pylint: disable=protected-access
    for name, child in sub.choices.items():
        texts[f"fedstale {name}"] = child.format_help()
    return texts


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """``fedstale run``."""
    # pylint: disable=import-outside-toplevel
    from .config import ConfigError
    from .runner import RunFailed, find_app_dir, parse_overrides, plan_run, run_flower, run_local

    try:
        plan = plan_run(args.config, {**parse_overrides(args.overrides), **_tracker_overrides(args)})
        app = find_app_dir(args.app) if args.engine == "flower" else None
    except (ConfigError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    print(plan.run_dir, flush=True)
    code = 0
    try:
        if app is None:
            run_local(plan)
        else:
            run_flower(plan, app)
    except ConfigError as err:
        print(err, file=sys.stderr)
        code = 2
    except RunFailed as err:
        print(err, file=sys.stderr)
        code = 1
    except Exception as err:  # pylint: disable=broad-except  # e.g. RunAborted: say it, exit 1
        print(f"run failed: {type(err).__name__}: {err}", file=sys.stderr)
        code = 1
    print(plan.run_dir, flush=True)
    return code


def cmd_sweep(args: argparse.Namespace) -> int:
    """``fedstale sweep``."""
    # pylint: disable=import-outside-toplevel
    from .config import ConfigError
    from .config import load_config, resolve_config_path
    from .sweep import SweepError, load_spec, run_sweep

    try:
        spec = load_spec(args.spec)
        if args.tracker:  # the config check: a known tracker whose package is installed
            load_config(resolve_config_path(spec.config, [Path.cwd(), spec.source.parent]), _tracker_overrides(args))
        if args.seeds is not None:
            if args.seeds < 1:
                raise SweepError([f"--seeds: must be >= 1, got {args.seeds}"])
            spec.seeds = (spec.seeds or list(range(args.seeds)))[: args.seeds]
        out = Path(args.out) if args.out else Path("results") / spec.name
        # cells run without a tracker; the sweep's own process logs each finished
        # cell (replay_run), so parallel cells never write to one store at once
        result = run_sweep(spec, out, args.workers, args.tracker or "none", args.tracking_uri, app_dir=args.app)
    except (SweepError, ConfigError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    print(result.out_dir, flush=True)
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """``fedstale report``."""
    from .report import ReportError, build_report  # pylint: disable=import-outside-toplevel

    dirs = [Path(d) for d in args.dirs]
    out = Path(args.out) if args.out else (dirs[0] / "report" if len(dirs) == 1 else Path("report"))
    try:
        path = build_report(dirs, out, targets=args.targets, title=args.title)
    except ReportError as err:
        print(err, file=sys.stderr)
        return 2
    print(path.resolve(), flush=True)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """``fedstale validate``: :func:`fedstale.config.main`."""
    from .config import main as validate  # pylint: disable=import-outside-toplevel

    return validate([args.config, *args.overrides])


def cmd_demo(_args: argparse.Namespace) -> int:
    """``fedstale demo``."""
    # pylint: disable=import-outside-toplevel
    from .report import build_report
    from .runner import plan_run, run_local

    started = time.perf_counter()
    run_dirs = []
    for config, overrides in DEMO_RUNS:
        plan = plan_run(config, {**overrides, "run.output_dir": DEMO_DIR})
        print(f"demo: {plan.config.run.name} -> {plan.run_dir}", file=sys.stderr, flush=True)
        run_dirs.append(run_local(plan))
    report = build_report(run_dirs, Path(DEMO_DIR) / "report", targets=[0.8, 0.9], title="fedstale demo")
    print(f"demo: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    print(report.resolve(), flush=True)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "validate": cmd_validate,
    "demo": cmd_demo,
    "superexec": superexec_cli.command,
}
"""Subcommand name → its function (returns the exit status)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedstale`` console script."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
