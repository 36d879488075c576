"""The two shapes a warm SuperExec can take, measured on fedstale's ClientApp code.

A warm SuperExec either (a) is a **fork server**: a parent that imported
torch, Flower and fedstale forks a child per task, which runs Flower's
``run_clientapp`` unchanged and exits, so whatever the child caches dies
with it; or (b) keeps **persistent workers** that serve task after task and
keep the client's partition, the model skeleton and torch's warm state in
memory (what :mod:`fedstale.superexec` does). This script measures the part
that differs, the ClientApp's own work per TRAIN task, without any
SuperLink: ``TorchClient.fit`` on a client of the digits dataset, run

- in a forked child of a parent that imported torch and fedstale but ran no
  torch operation (forking after torch has started its thread pool can
  hang), fork to exit;
- the same with the dataset already loaded in the parent (a fork server
  could preload what every task of the experiment shares), and then also
  with the modules the ClientApp imports lazily (scikit-learn's datasets,
  flwr-datasets' partitioners: ``fedstale superexec``'s default preload);
- in one persistent process: its first task per client, then the next ones.

Run from the repository root::

    python simulations/bench_superexec_shapes.py [--model cnn] [--tasks 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Time the three ways; print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cnn", help="model.name (default cnn)")
    parser.add_argument("--tasks", type=int, default=3, help="tasks per way (default 3)")
    args = parser.parse_args()
    started = time.perf_counter()
    import torch  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import

    import fedstale.client_app  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    from fedstale.builders import train_config  # pylint: disable=import-outside-toplevel
    from fedstale.client.torch_client import TorchClient, split_from  # pylint: disable=import-outside-toplevel
    from fedstale.config import load_config  # pylint: disable=import-outside-toplevel
    from fedstale.models import build_model  # pylint: disable=import-outside-toplevel
    from fedstale.superexec.dispatcher import DEFAULT_PRELOAD  # pylint: disable=import-outside-toplevel

    imports = time.perf_counter() - started
    cfg = load_config(ROOT / "configs/fedasync.yaml",
                      {"model.name": args.model, "data.num_clients": 4, "strategy.concurrency": 4})
    config = {**dict(train_config(cfg)), "num-clients": 4}

    def task(client: int) -> float:
        begin = time.perf_counter()
        model = build_model(args.model, split_from(config).spec)
        params = [v.detach().numpy().copy() for v in model.state_dict().values()]
        TorchClient(client, 4).fit(params, config)
        return time.perf_counter() - begin

    def forked(client: int) -> float:
        read, write = os.pipe()
        begin = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: one task, then exit without cleanup
            os.close(read)
            os.write(write, json.dumps(task(client)).encode())
            os._exit(0)
        os.close(write)
        json.loads(os.read(read, 64))
        os.waitpid(pid, 0)
        return time.perf_counter() - begin

    load = os.getloadavg()[0]
    fork_cold = [forked(i % 2) for i in range(args.tasks)]
    split_from(config)  # the parent now holds the dataset (no torch op yet)
    fork_data = [forked(i % 2) for i in range(args.tasks)]
    for name in DEFAULT_PRELOAD:  # and what the ClientApp imports lazily
        __import__(name)
    fork_best = [forked(i % 2) for i in range(args.tasks)]
    persistent = [task(i % 2) for i in range(2 + args.tasks)]
    print(f"model {args.model}, load {load:.1f}-{os.getloadavg()[0]:.1f}, CPUs {os.cpu_count()}; "
          f"import torch + fedstale.client_app: {imports:.2f} s (paid once by either shape)")
    print(f"fork server, per task (fork to exit):              {statistics.fmean(fork_cold):6.2f} s  "
          + " ".join(f"{x:.2f}" for x in fork_cold))
    print(f"fork server, dataset preloaded in the parent:      {statistics.fmean(fork_data):6.2f} s  "
          + " ".join(f"{x:.2f}" for x in fork_data))
    print(f"fork server, dataset and lazy imports preloaded:   {statistics.fmean(fork_best):6.2f} s  "
          + " ".join(f"{x:.2f}" for x in fork_best))
    print(f"persistent worker, first task of each client:      {statistics.fmean(persistent[:2]):6.2f} s  "
          + " ".join(f"{x:.2f}" for x in persistent[:2]))
    print(f"persistent worker, later tasks:                    {statistics.fmean(persistent[2:]):6.2f} s  "
          + " ".join(f"{x:.2f}" for x in persistent[2:]))


if __name__ == "__main__":
    main()
