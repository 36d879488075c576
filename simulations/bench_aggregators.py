"""Speed of fedstale's robust reducers against the Flower / byzfl references.

What is measured
----------------
Every reducer and pre-aggregator of :mod:`fedstale.aggregation` is timed on
one buffer of ``--buffer`` updates (default 50) of ``--params`` float32
parameters each (default 1,000,000), and so is each reference implementation
it is tested against (``tests/test_robust_reducers.py``) on the *same*
numbers:

==================  ===================================================================
fedstale            references
==================  ===================================================================
median              Flower ``FedMedian.aggregate_train``; byzfl ``Median``
trimmed_mean (β)    Flower ``FedTrimmedAvg(beta).aggregate_train``; byzfl ``TrMean(f=⌊βn⌋)``
krum (f)            Flower ``MultiKrum(f, num_nodes_to_select=1).aggregate_train``;
                    byzfl ``Krum(f + 1)`` (byzfl counts one neighbour fewer)
multi_krum (f)      Flower ``MultiKrum(f).aggregate_train``
bulyan (f)          Flower ``Bulyan(f).aggregate_train``
geometric_median    byzfl ``GeometricMedian(nu, T)``
centered_clipping   byzfl ``CenteredClipping(tau, L)``
clip                byzfl ``Clipping(c)``
nnm (f)             byzfl ``NNM(f)``
bucketing (s)       byzfl ``Bucketing(s)``
==================  ===================================================================

Inputs are what each implementation takes: fedstale a ``[n, d]`` torch
tensor; Flower a list of reply ``Message``s whose ArrayRecord holds the
update as 4 arrays of d/4 values (the call a Flower ``ServerApp`` makes;
building the messages is not timed); byzfl both a ``[n, d]`` NumPy array and
a torch tensor (it accepts either), keeping the faster, each a fresh copy per
call (byzfl's ``Clipping`` and fedstale's ``clip`` rescale their input in place; copying is not timed);
fedstale gets fresh copies of the same two kinds (a torch clone and a tensor over a NumPy copy), also
keeping the faster. A reducer's ratio is
**the fastest reference's time ÷ fedstale's time** (> 1: fedstale is faster),
each the minimum of ``--repeats`` calls after one untimed warm-up call (a
single call when one takes over 10 s). Results are checked to agree (1e-4
relative), so no side is timed doing less work.

fedstale's ``trimmed_mean`` runs its compiled kernel when Numba is installed
(the ``fast`` extra) and sorts otherwise; the second line says which.

Threads: torch and NumPy use their defaults on this machine (printed); the
ratios are for one run on one machine. Target: ≥ 2× for each reducer. The
last line prints the smallest ratio.

Run: ``python simulations/bench_aggregators.py [--params 1000000 --buffer 50]``
(a few minutes on 2 cores; about 3 GB of memory at the defaults).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

F = 4
"""Byzantine updates tolerated (f) by the reducers that take it (n=50: 8%)."""
BETA = 0.1
NU, GM_ITERATIONS = 0.1, 3
TAU, CC_ITERATIONS = 1.0, 3
CLIP_NORM = 1.0
BUCKET = 2


def _timed(
    call: Callable[[Any], Any], repeats: int, prepare: Callable[[], Any] = lambda: None
) -> tuple[float, Any]:
    """(minimum seconds over ``repeats`` calls after a warm-up, last result).

    ``call(prepare())``: only ``call`` is timed (Flower's strategies take
    the arrays out of the replies they aggregate, so each call gets fresh ones).
    """
    best, result = float("inf"), None
    for attempt in range(repeats + 1):
        argument = prepare()
        start = time.perf_counter()
        result = call(argument)
        seconds = time.perf_counter() - start
        if attempt == 0 and seconds > 10.0:
            return seconds, result
        if attempt > 0:
            best = min(best, seconds)
    return best, result


def _flat(value: Any) -> np.ndarray:
    """A result as one float64 vector (Flower's ArrayRecord, a tensor, an array)."""
    from flwr.app import ArrayRecord  # pylint: disable=import-outside-toplevel

    if isinstance(value, tuple):
        value = value[0]
    if isinstance(value, ArrayRecord):
        return np.concatenate([a.ravel() for a in value.to_numpy_ndarrays()]).astype(np.float64)
    if isinstance(value, torch.Tensor):
        return value.detach().double().numpy().ravel()
    return np.asarray(value, dtype=np.float64).ravel()


def _replies(stack: np.ndarray) -> list:
    """Flower TRAIN replies, one per row, as a Flower ServerApp receives them."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict  # pylint: disable=import-outside-toplevel

    from fedstale.simulation.local_grid import _ensure_task_identity  # pylint: disable=import-outside-toplevel

    _ensure_task_identity()
    replies = []
    for row in stack:
        content = RecordDict(
            {
                "arrays": ArrayRecord(list(np.array_split(row, 4))),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        request = Message(RecordDict(), dst_node_id=5, message_type="train")
        request.metadata.__dict__["_message_id"] = "m"
        replies.append(Message(content, reply_to=request))
    return replies


def _cases(n: int) -> list[tuple[str, Callable, dict[str, Callable]]]:
    """(name, fedstale aggregator, {reference name: callable(inputs)})."""
    # pylint: disable=import-outside-toplevel
    import byzfl
    from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, MultiKrum

    from fedstale.aggregation.preaggregators import Clip, NearestNeighbourMixing
    from fedstale.aggregation.reducers import (
        Bulyan as OurBulyan,
        CenteredClipping,
        GeometricMedian,
        Krum,
        Median,
        MultiKrum as OurMultiKrum,
        TrimmedMean,
    )

    def flower(strategy):
        return lambda replies: strategy.aggregate_train(1, replies)

    def byz(make):
        # A fresh byzfl object per call: CenteredClipping keeps its center.
        return lambda vectors: make()(vectors)

    def ours_pre(stage):
        return lambda t, w: stage(t, w)[0]

    return [
        ("median", Median(), {
            "Flower FedMedian": flower(FedMedian()),
            "byzfl Median": byz(byzfl.Median),
        }),
        (f"trimmed_mean(beta={BETA})", TrimmedMean(beta=BETA), {
            "Flower FedTrimmedAvg": flower(FedTrimmedAvg(beta=BETA)),
            "byzfl TrMean": byz(lambda: byzfl.TrMean(f=int(BETA * n))),
        }),
        (f"krum(f={F})", Krum(f=F), {
            "Flower MultiKrum(m=1)": flower(MultiKrum(num_malicious_nodes=F, num_nodes_to_select=1)),
            "byzfl Krum": byz(lambda: byzfl.Krum(f=F + 1)),
        }),
        (f"multi_krum(f={F})", OurMultiKrum(f=F), {
            # byzfl's MultiKrum averages n − f updates scored on n − f − 1
            # neighbours: no f gives Flower's (and our) selection.
            "Flower MultiKrum": flower(MultiKrum(num_malicious_nodes=F, num_nodes_to_select=n - F)),
        }),
        (f"bulyan(f={F})", OurBulyan(f=F), {
            "Flower Bulyan": flower(Bulyan(num_malicious_nodes=F)),
        }),
        ("geometric_median", GeometricMedian(nu=NU, iterations=GM_ITERATIONS), {
            "byzfl GeometricMedian": byz(lambda: byzfl.GeometricMedian(nu=NU, T=GM_ITERATIONS)),
        }),
        ("centered_clipping", _FreshCenteredClipping(CenteredClipping, TAU, CC_ITERATIONS), {
            "byzfl CenteredClipping": byz(lambda: byzfl.CenteredClipping(tau=TAU, L=CC_ITERATIONS)),
        }),
        ("clip", ours_pre(Clip(max_norm=CLIP_NORM)), {
            "byzfl Clipping": byz(lambda: byzfl.Clipping(c=CLIP_NORM)),
        }),
        (f"nnm(f={F})", ours_pre(NearestNeighbourMixing(f=F)), {
            "byzfl NNM": byz(lambda: byzfl.NNM(f=F)),
        }),
        (f"bucketing(s={BUCKET})", None, {}),  # random permutation: timed alone below
    ]


class _FreshCenteredClipping:
    """Centered clipping restarted from zero at every call (as byzfl's fresh object)."""

    def __init__(self, cls, tau: float, iterations: int) -> None:
        self.reducer = cls(tau=tau, iterations=iterations)

    def __call__(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        self.reducer.reset()
        return self.reducer(t, w)


def _bucketing(
    stack: torch.Tensor, weights: torch.Tensor, repeats: int, fresh: tuple[Callable, ...]
) -> tuple[float, float]:
    """Bucketing permutes with its own RNG, so results differ by design: time only."""
    import byzfl  # pylint: disable=import-outside-toplevel

    from fedstale.aggregation.preaggregators import Bucketing  # pylint: disable=import-outside-toplevel

    ours = min(
        _timed(lambda s: Bucketing(bucket_size=BUCKET, seed=0)(s, weights), repeats, prepare)[0]
        for prepare in fresh
    )
    reference = min(
        _timed(lambda vectors: byzfl.Bucketing(s=BUCKET)(vectors), repeats, prepare)[0]
        for prepare in (stack.numpy().copy, stack.clone)
    )
    return ours, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--params", type=int, default=1_000_000, help="parameters per update (d)")
    parser.add_argument("--buffer", type=int, default=50, help="updates in the buffer (n)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per implementation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n, d = args.buffer, args.params
    if n < 4 * F + 3:
        parser.error(f"--buffer must be at least {4 * F + 3} (Bulyan with f={F})")

    stack_np = np.random.default_rng(args.seed).normal(size=(n, d)).astype(np.float32)
    stack = torch.from_numpy(stack_np)
    weights = torch.ones(n)
    print(
        f"[bench] n={n} updates x d={d:,} float32 parameters; torch threads "
        f"{torch.get_num_threads()}; ratio = fastest reference / fedstale"
    )
    from fedstale.aggregation import kernels  # pylint: disable=import-outside-toplevel

    print(
        "[bench] fedstale trimmed_mean: "
        + ("compiled kernel (Numba)" if kernels.available() else "sort (Numba not installed: pip install -e '.[fast]')")
    )
    print(f"{'aggregator':<24}{'fedstale s':>12}  {'reference':<24}{'reference s':>12}{'ratio':>8}")
    ratios: dict[str, float] = {}
    cases = _cases(n)  # imports Flower, which sets up its logger
    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's per-call INFO lines
    # NumPy's copy lands on transparent huge pages, torch's clone on 4 KiB
    # pages; a memory-bound rule can run ~1.5x faster on the former.
    fresh = (stack.clone, lambda: torch.from_numpy(stack_np.copy()))
    for name, ours, references in cases:
        if ours is None:
            ours_s, ref_s = _bucketing(stack, weights, args.repeats, fresh)
            ratios[name] = ref_s / ours_s
            print(f"{name:<24}{ours_s:>12.4f}  {'byzfl Bucketing':<24}{ref_s:>12.4f}{ratios[name]:>7.1f}x")
            continue
        # A fresh copy per call, as for byzfl (clip rescales its input in
        # place), of both kinds the byzfl references get, keeping the faster.
        ours_s, ours_out = min(
            (_timed(lambda s: ours(s, weights), args.repeats, prepare) for prepare in fresh),
            key=lambda timed: timed[0],
        )
        expected = _flat(ours_out)
        best_name, best_s = "", float("inf")
        for ref_name, call in references.items():
            if ref_name.startswith("Flower"):
                inputs = [lambda: _replies(stack_np)]
            else:
                # byzfl's Clipping rescales its input in place: a fresh copy per call.
                inputs = [stack_np.copy, stack.clone]
            for prepare in inputs:
                seconds, out = _timed(call, args.repeats, prepare)
                scale = max(1.0, float(np.abs(expected).max()))
                gap = float(np.abs(_flat(out) - expected).max()) / scale
                if gap > 1e-4:
                    raise SystemExit(f"{name}: {ref_name} differs from fedstale by {gap:.2e}")
                if seconds < best_s:
                    best_name, best_s = ref_name, seconds
        ratios[name] = best_s / ours_s
        print(f"{name:<24}{ours_s:>12.4f}  {best_name:<24}{best_s:>12.4f}{ratios[name]:>7.1f}x")
    worst = min(ratios, key=ratios.get)
    print(
        f"min speed-up over the fastest reference: {ratios[worst]:.2f}x ({worst}); "
        f"target >= 2x for each"
    )


if __name__ == "__main__":
    main()
