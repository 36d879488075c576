"""The seed table behind every bound on a learned quantity in the tests.

Runs the tests marked ``learned`` (those that check an accuracy, an attack
success rate, an ε reached... through the ``learned`` fixture of
``tests/conftest.py``) once per seed, with ``FEDSTALE_TEST_SEED`` =
0, 1, ... (``run.seed`` and ``data.seed`` of every run, see
``tests/helpers.py``), and prints, per test module, each check's worst value
over the seeds next to its bound and the margin between them. With
``--write`` the tables replace the ``Seed table`` block of each test
module's docstring (``tests/test_seed_tables.py`` checks every learned test
has its rows there).

    python simulations/seed_table.py                  # 5 seeds, all learned tests
    python simulations/seed_table.py --seeds 5 -k robustness --write

The last line is the smallest margin seen (negative: a bound some seed misses).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "Seed table ("


def run_seed(seed: int, table: Path, workers: int, keyword: str | None) -> tuple[int, float]:
    """``pytest -m learned`` with this seed; returns (exit status, seconds)."""
    command = [sys.executable, "-m", "pytest", "-m", "learned", "-q", "-p", "no:cacheprovider",
               "-n", str(workers)]
    if keyword:
        command += ["-k", keyword]
    env = dict(os.environ, FEDSTALE_TEST_SEED=str(seed), FEDSTALE_SEED_TABLE=str(table))
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    table.with_suffix(f".seed{seed}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    print(f"seed {seed}: {lines[-1] if lines else 'no output'}", flush=True)
    return proc.returncode, time.monotonic() - started


def summarise(records: list[dict]) -> dict[str, list[dict]]:
    """Per test module, one row per (test, statistic): worst value, bound, margin."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in records:
        grouped[(record["test"], record["stat"])].append(record)
    modules: dict[str, list[dict]] = defaultdict(list)
    for (test, stat), rows in sorted(grouped.items()):
        op, bound = rows[0]["op"], rows[0]["bound"]
        values = [r["value"] for r in rows]
        worst = min(values) if op == ">=" else max(values)
        margin = worst - bound if op == ">=" else bound - worst
        path, _, name = test.partition("::")
        modules[path].append(
            {"test": name, "stat": stat, "seeds": sorted({r["seed"] for r in rows}),
             "worst": worst, "op": op, "bound": bound, "margin": margin}
        )
    return modules


def markdown(rows: list[dict]) -> list[str]:
    """The table's lines."""
    out = ["| test | statistic | seeds | worst | bound | margin |", "|---|---|---|---|---|---|"]
    for r in rows:
        seeds = ",".join(str(seed) for seed in r["seeds"])
        out.append(
            f"| {r['test']} | {r['stat'].replace('|', '/')} | {seeds} | {r['worst']:.3f} "
            f"| {r['op']} {r['bound']:g} | {r['margin']:.3f} |"
        )
    return out


def write_table(path: Path, rows: list[dict], heading: str) -> None:
    """Replace (or add) the ``Seed table`` block of ``path``'s module docstring."""
    text = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(text), clean=False)
    if doc is None:
        raise SystemExit(f"{path}: no module docstring to hold the seed table")
    lines = doc.splitlines()
    block = [*heading.splitlines(), "", *markdown(rows)]
    if any(line.startswith(MARKER) for line in lines):
        start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
        end = start
        while end < len(lines) and lines[end].strip():  # the heading
            end += 1
        while end < len(lines) and not lines[end].strip():
            end += 1
        while end < len(lines) and lines[end].startswith("|"):  # the table
            end += 1
        new = lines[:start] + block + lines[end:]
    else:
        new = [*lines, "", *block] if lines and lines[-1].strip() else [*lines, *block]
    if doc.endswith("\n") and new[-1] != "":
        new.append("")
    text = text.replace(doc, "\n".join(new), 1)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    """Run the seeds and print (and with ``--write``, store) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per seed")
    parser.add_argument("-k", dest="keyword", help="only the learned tests matching this -k expression")
    parser.add_argument("--records", type=Path, help="JSON-lines file to keep (default: a temporary one)")
    parser.add_argument("--from-records", type=Path, help="summarise this file instead of running")
    parser.add_argument("--write", action="store_true", help="write the tables into the test modules")
    args = parser.parse_args()

    if args.from_records:
        table = args.from_records
    else:
        table = args.records or Path(tempfile.mkstemp(prefix="seed-table-", suffix=".jsonl")[1])
        table.write_text("", encoding="utf-8")
        for seed in range(args.seeds):
            run_seed(seed, table, args.workers, args.keyword)
    records = [json.loads(line) for line in table.read_text(encoding="utf-8").splitlines() if line]
    modules = summarise(records)
    seeds = sorted({r["seed"] for r in records})
    heading = (
        f"Seed table (``python simulations/seed_table.py``; seeds {seeds[0]}-{seeds[-1]}, "
        f"2 CPU cores, {date.today().isoformat()}):\nthe worst value of each check over "
        "the seeds, its bound, and the margin between them."
    )
    for path, rows in sorted(modules.items()):
        print(f"\n{path}\n" + "\n".join(markdown(rows)))
        if args.write:
            write_table(ROOT / path, rows, heading)
    margins = [r["margin"] for rows in modules.values() for r in rows]
    if not margins:
        raise SystemExit("no learned check ran")
    worst = min(margins)
    print(f"\n{len(margins)} checks over {len(seeds)} seeds; smallest margin {worst:.3f}")


if __name__ == "__main__":
    main()
