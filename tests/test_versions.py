"""Model versions: the global model's ArrayRecord per version, base-model snapshots by reference count."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedstale.strategies.versions import GlobalModel, SnapshotStore


def _arrays() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.arange(4, dtype=np.float32).reshape(2, 2)), "b": Array(np.ones(1, np.float32))})


def test_global_model_builds_its_arrays_once_per_version():
    model = GlobalModel(_arrays())
    assert model.version == 0 and model.codec.num_parameters == 5
    assert model.flat.tolist() == [0.0, 1.0, 2.0, 3.0, 1.0]
    first = model.arrays()
    assert model.arrays() is first  # cached
    assert first["w"].numpy().tolist() == [[0.0, 1.0], [2.0, 3.0]]
    arrays = model.advance(torch.full((5,), 2.0))
    assert model.version == 1 and arrays is model.arrays() and arrays is not first
    assert arrays["b"].numpy().tolist() == [2.0]
    model.restore(7, torch.zeros(5))
    assert model.version == 7 and model.arrays()["w"].numpy().tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_an_empty_global_model_has_no_parameters():
    model = GlobalModel(ArrayRecord())
    assert model.version == 0 and model.flat.numel() == 0 and model.codec.nbytes == 0


def test_snapshots_are_kept_while_a_task_needs_them():
    store = SnapshotStore()
    v0, v1 = torch.zeros(2), torch.ones(2)
    assert store.acquire(0, v0) is v0
    assert store.acquire(0, torch.full((2,), 9.0)) is v0  # already stored: the first stays
    assert store.refs(0) == 2
    store.acquire(1, v1)
    store.release(0, current=1)
    assert 0 in store and store.refs(0) == 1
    store.release(0, current=1)
    assert 0 not in store and len(store) == 1
    store.release(1, current=1)  # unused, but the current version stays
    assert 1 in store and store.refs(1) == 0
    store.drop_unused(current=2)
    assert len(store) == 0
    store.release(5, current=2)  # unknown versions are ignored


def test_snapshots_for_a_resume_point_and_back():
    store = SnapshotStore()
    for version in (3, 1, 2):
        store.acquire(version, torch.full((1,), float(version)))
    bases = store.bases({3, 1})
    assert list(bases) == [1, 3] and bases[3].item() == 3.0
    fresh = SnapshotStore()
    fresh.load(bases, current=4, model=torch.full((1,), 4.0))
    assert sorted(v for v in range(6) if v in fresh) == [1, 3, 4]
    assert [fresh.refs(v) for v in (1, 3, 4)] == [0, 0, 0]
    assert fresh.base(4).item() == 4.0
