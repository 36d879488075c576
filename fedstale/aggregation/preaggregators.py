"""Pre-aggregators: transform a buffer before a reducer combines it.

Each maps ``(updates [n, d], weights [n])`` to a new stack and weights:

============== ============================================================== ======================
YAML name      rule                                                           matches
============== ============================================================== ======================
``clip``       u_i ← u_i · min(1, c / ‖u_i‖)                                  byzfl ``Clipping(c)``
``nnm``        u_i ← mean of the n − f updates nearest u_i (itself included)  byzfl ``NNM(f)``
               (nearest-neighbour mixing, Allouah et al., 2023)
``bucketing``  random permutation, then the mean of each bucket of s          byzfl ``Bucketing(s)``
               consecutive updates (the last bucket may be smaller;
               Karimireddy et al., 2022); a bucket's weight is the mean of
               its members' weights
============== ============================================================== ======================

Compose them before a reducer in YAML: ``strategy.aggregator: clip>nnm>trimmed_mean``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from .reducers import squared_distances


def new_stack(rows: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``[rows, d]`` tensor for a stage's output, d and dtype of ``like``.

    ``nnm`` and ``bucketing`` return a new stack (their rows mix several
    inputs). On CPU that memory is
    allocated by NumPy, which asks Linux for transparent huge pages on large
    arrays (``madvise``); torch's allocator maps 4 KiB pages, and faulting in
    the 51,200 pages of a fresh 50 × 1M float32 stack took longer than the
    arithmetic that fills them (measured: a new 200 MB stack filled in
    0.135 s through torch's allocator, 0.073 s through NumPy's).
    """
    shape = (rows, like.shape[1])
    if like.device.type != "cpu" or like.dtype not in (torch.float32, torch.float64):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    dtype = np.float32 if like.dtype == torch.float32 else np.float64
    return torch.from_numpy(np.empty(shape, dtype=dtype))


class PreAggregator(ABC):
    """Transform a buffer of updates (and their weights).

    A stage owns the stack it is given and may overwrite it (``clip``
    rescales in place); callers that need their deltas afterwards pass a
    copy. fedstale's strategies stack the buffer for the aggregator alone
    and score trust before aggregating.
    """

    name: str = ""

    @abstractmethod
    def __call__(
        self, updates: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the transformed updates and weights."""

    def required_updates(self) -> int:
        """Fewest updates the stage accepts."""
        return 1

    def reset(self) -> None:
        """Forget any state (a new run)."""


class Clip(PreAggregator):
    """Scale each update to an L2 norm of at most ``max_norm``."""

    name = "clip"

    def __init__(self, *, max_norm: float = 1.0) -> None:
        if max_norm <= 0:
            raise ValueError(f"clip: max_norm must be > 0, got {max_norm}")
        self.max_norm = max_norm

    def __call__(
        self, updates: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """u_i · min(1, c/‖u_i‖), rescaling ``updates`` in place.

        In place, as byzfl's ``Clipping``: one read for the norms and one
        rewrite of the rows above c, instead of writing a second 200 MB
        stack (which alone costs more than both passes). The stack belongs
        to the pipeline (see :class:`PreAggregator`).
        """
        norms = torch.linalg.vector_norm(updates, dim=1)
        factors = torch.clamp(self.max_norm / norms, max=1.0)
        above = torch.nonzero(factors < 1.0).flatten().tolist()
        if len(above) == len(updates):
            updates.mul_(factors[:, None].to(updates.dtype))
        else:
            for row in above:  # rows within the bound are left untouched
                updates[row].mul_(float(factors[row]))
        return updates, weights


class NearestNeighbourMixing(PreAggregator):
    """Replace each update by the mean of its n − f nearest updates (itself included)."""

    name = "nnm"

    def __init__(self, *, f: int = 1) -> None:
        if f < 0:
            raise ValueError(f"nnm: f must be >= 0, got {f}")
        self.f = f

    def required_updates(self) -> int:
        """n > f."""
        return self.f + 1

    def __call__(
        self, updates: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row i ← mean of the n − f rows nearest row i."""
        k = len(updates) - self.f
        nearest = torch.topk(squared_distances(updates), k, dim=1, largest=False).indices
        mixing = torch.zeros(len(updates), len(updates), dtype=updates.dtype)
        mixing.scatter_(1, nearest, 1.0 / k)
        return mixing @ updates, weights


class Bucketing(PreAggregator):
    """Average random buckets of ``bucket_size`` updates.

    The permutation comes from a generator seeded with ``seed`` and advanced
    at every call, so a run is reproducible.
    """

    name = "bucketing"

    run_state_attributes = ("_generator",)
    """What :func:`fedstale.component_state.capture` saves (what :meth:`reset` restarts)."""

    def __init__(self, *, bucket_size: int = 2, seed: int = 0) -> None:
        if bucket_size < 1:
            raise ValueError(f"bucketing: bucket_size must be >= 1, got {bucket_size}")
        self.bucket_size = bucket_size
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        """Restart the permutation sequence."""
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(
        self, updates: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means of consecutive buckets of a random permutation."""
        order = torch.randperm(len(updates), generator=self._generator)
        groups = torch.arange(len(updates)) // self.bucket_size
        count = int(groups[-1]) + 1
        sizes = torch.bincount(groups, minlength=count)
        # Bucket means as one [count, n] averaging matrix times the stack (a
        # single BLAS pass instead of gathering the permuted rows).
        averaging = torch.zeros(count, len(updates), dtype=torch.float64)
        averaging[groups, order] = 1.0 / sizes[groups].double()
        means = new_stack(count, updates)
        torch.matmul(averaging.to(updates.dtype), updates, out=means)
        return means, averaging.to(weights.dtype) @ weights


PREAGGREGATORS: dict[str, type[PreAggregator]] = {
    cls.name: cls for cls in (Clip, NearestNeighbourMixing, Bucketing)
}
"""Registry keyed by the names used in YAML (stages before the last of ``strategy.aggregator``)."""
