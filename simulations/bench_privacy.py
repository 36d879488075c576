"""What each privacy mode costs on the default experiment: accuracy, ε, bytes, time.

What is measured
----------------
``configs/default.yaml`` (FedBuff, 20 clients, C=10, K=5, digits CNN) run in
process on :class:`fedstale.simulation.local_grid.LocalGrid` for the same
number of server versions, once per privacy mode:

- ``none``: no privacy (the baseline);
- ``central z=...``: central DP, updates clipped to ``--clip`` (about the
  median update norm of the baseline) and N(0, (z·C/K)²) added to each
  buffer mean, ε accounted without amplification (``sampling: none``) and,
  in brackets, with Poisson amplification q = K/N;
- ``secagg``: simulated secure aggregation (16-bit fixed point, groups of K);
- any config given with ``--extra NAME=path.yaml`` (e.g. the DP-SGD config).

For each it prints the final test accuracy, ε at δ = 1e-5, bytes uploaded
per update and the loop's wall seconds (``wall_time`` of the last
``metrics.csv`` row), and the ratio of that wall time to the baseline's.
Wall times are measured in this one run on this machine.

Run from the repository root (about 5 minutes on 2 idle cores)::

    python simulations/bench_privacy.py [--versions 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
import torch  # noqa: E402

from fedstale.aggregation.privacy import CentralGaussianMechanism  # noqa: E402
from fedstale.config import load_config  # noqa: E402
from fedstale.simulation.local_grid import run_in_process  # noqa: E402
from fedstale.strategies import MemoryRecorder  # noqa: E402


def _modes(noise: list[float], clip: float) -> list[tuple[str, Path, dict[str, Any]]]:
    default = ROOT / "configs" / "default.yaml"
    modes: list[tuple[str, Path, dict[str, Any]]] = [("none", default, {})]
    for z in noise:
        modes.append(
            (
                f"central z={z:g}",
                default,
                {
                    "privacy.central.enabled": True,
                    "privacy.central.noise_multiplier": z,
                    "privacy.central.clipping_norm": clip,
                },
            )
        )
    modes.append(("secagg", default, {"privacy.secagg.enabled": True}))
    return modes


def _poisson_epsilon(strategy: Any) -> float | None:
    """ε of the same releases accounted with Poisson amplification (q = K/N)."""
    dp = strategy.central_dp
    if dp is None or dp.num_releases == 0:
        return None
    twin = CentralGaussianMechanism(
        dp.noise_multiplier, dp.clipping_norm, dp.population_size, dp.delta, "poisson"
    )
    for _ in range(dp.num_releases):
        twin.release(torch.zeros(1), strategy.buffer_size)
    return twin.epsilon()


def run_mode(path: Path, overrides: dict[str, Any], versions: int, seed: int) -> dict[str, Any]:
    """One run; its final row and privacy numbers."""
    cfg = load_config(
        path,
        {
            **overrides,
            "stop.num_updates": versions,
            "evaluation.every": versions,
            "run.seed": seed,
        },
    )
    recorder = MemoryRecorder()
    _, strategy = run_in_process(cfg, recorder)
    last = recorder.evaluations[-1]
    updates = max(len(recorder.updates), 1)
    return {
        "accuracy": float(last["accuracy"]),
        "central": last["central_epsilon"],
        "poisson": _poisson_epsilon(strategy),
        "client": last["max_client_epsilon"],
        "bytes": sum(int(u["bytes_up"]) for u in recorder.updates) / updates,
        "wall": float(last["wall_time"]),
    }


def main() -> None:
    """Run every mode and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="*", default=[0.005, 0.02, 0.1])
    parser.add_argument("--clip", type=float, default=0.5)
    parser.add_argument("--extra", nargs="*", default=[], help="NAME=path.yaml")
    args = parser.parse_args()
    modes = _modes(args.noise, args.clip)
    for item in args.extra:
        name, _, path = item.partition("=")
        modes.append((name, ROOT / path, {}))
    rows = []
    for name, path, overrides in modes:
        result = run_mode(path, overrides, args.versions, args.seed)
        rows.append((name, result))
        print(f"{name}: {result}", flush=True)
    base_wall = rows[0][1]["wall"]
    print()
    print("| mode | accuracy | ε (δ=1e-5) | bytes up / update | loop wall s | wall vs none |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        if r["central"] != "":
            eps = f"{float(r['central']):.3g} central ({r['poisson']:.3g} with Poisson q=K/N)"
        elif r["client"] != "":
            eps = f"{float(r['client']):.3g} per client (DP-SGD)"
        else:
            eps = "—"
        print(
            f"| {name} | {r['accuracy']:.3f} | {eps} | {r['bytes']:.0f} | "
            f"{r['wall']:.1f} | {r['wall'] / base_wall:.2f}× |"
        )


if __name__ == "__main__":
    main()
