"""Model versions: the global model and the base models of the tasks in flight.

A *version* is one change of the global model. :class:`GlobalModel` holds
the current one as a flat vector (for the aggregation rules) and as an
ArrayRecord (for messages and checkpoints, built once per version).
:class:`SnapshotStore` keeps the older versions that tasks in flight
started from: a client's update Δ = x_local − x_start needs its x_start,
and a compressed reply carries Δ only. Each stored version counts the tasks
that still need it and is dropped when none does (the current version is
always kept).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from ..aggregation.vectors import ModelCodec


class GlobalModel:
    """The global model: flat vector, version number and ArrayRecord.

    Parameters
    ----------
    initial_arrays : ArrayRecord
        Version 0; its layout (names, shapes, dtypes) is the model's.

    Attributes
    ----------
    codec : ModelCodec
        Converts between the model's ArrayRecord layout and flat vectors.
    flat : torch.Tensor
        The current model as one float32 vector.
    version : int
        The current version (0 until the first change).
    made_at : float
        Clock time at which the current version was made (0 for version 0).
    """

    def __init__(self, initial_arrays: ArrayRecord) -> None:
        self.codec = ModelCodec(initial_arrays)
        self.flat: torch.Tensor = self.codec.flatten(initial_arrays)
        self.version = 0
        self.made_at = 0.0
        self._arrays = ArrayRecord()
        self._arrays_version = -1

    def arrays(self) -> ArrayRecord:
        """The current model as an ArrayRecord (built once per version)."""
        if self._arrays_version != self.version:
            self._arrays = self.codec.unflatten(self.flat)
            self._arrays_version = self.version
        return self._arrays

    def advance(self, new_model: torch.Tensor, at: float = 0.0) -> ArrayRecord:
        """Make ``new_model`` the next version, made at time ``at``; return it as an ArrayRecord."""
        self.flat = new_model
        self.version += 1
        self.made_at = at
        return self.arrays()

    def restore(self, version: int, flat: torch.Tensor, made_at: float = 0.0) -> None:
        """Continue from ``flat`` at ``version``, made at ``made_at`` (a resume point)."""
        self.version = version
        self.flat = flat
        self.made_at = made_at
        self._arrays_version = -1


class SnapshotStore:
    """Base models by version, with the number of tasks in flight that need each.

    Attributes
    ----------
    peak : int
        The most base models held at once so far (at most the number of
        tasks in flight plus the current version: it grows with the
        concurrency, never with the population).
    """

    def __init__(self) -> None:
        self._models: dict[int, list] = {}
        self.peak = 0

    def __contains__(self, version: int) -> bool:
        return version in self._models

    def __len__(self) -> int:
        return len(self._models)

    def acquire(self, version: int, model: torch.Tensor) -> torch.Tensor:
        """One more task starts from ``version`` (``model``, unless already stored); return it."""
        snapshot = self._models.setdefault(version, [model, 0])
        snapshot[1] += 1
        self.peak = max(self.peak, len(self._models))
        return snapshot[0]

    def base(self, version: int) -> torch.Tensor:
        """The stored model of ``version``."""
        return self._models[version][0]

    def refs(self, version: int) -> int:
        """Tasks that still need ``version``."""
        return self._models[version][1]

    def release(self, version: int, current: int) -> None:
        """A task that started from ``version`` is done with it; drop what is unused."""
        snapshot = self._models.get(version)
        if snapshot is not None:
            snapshot[1] -= 1
        self.drop_unused(current)

    def drop_unused(self, current: int) -> None:
        """Forget every version no task needs, except ``current``."""
        for version in [v for v, (_, refs) in self._models.items() if refs <= 0]:
            if version != current:
                del self._models[version]

    def bases(self, versions: set[int]) -> dict[int, torch.Tensor]:
        """The models of ``versions``, in version order (for a resume point)."""
        return {v: self._models[v][0] for v in sorted(versions)}

    def load(self, bases: dict[int, torch.Tensor], current: int, model: torch.Tensor) -> None:
        """Start over from a resume point's ``bases`` and the ``current`` model (no references yet)."""
        self._models = {v: [m, 0] for v, m in bases.items()}
        self._models.setdefault(current, [model, 0])
