"""The data cache (:mod:`fedstale.data.cache`): the same arrays as computing
them, keyed by every input and library version, safe against a broken entry,
off on request, and a warm process imports neither scikit-learn nor
flwr-datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fedstale.data import cache as cache_module
from fedstale.data.cache import cached_arrays
from fedstale.data.digits import _split, load_digits_split
from fedstale.data.partition import PartitionSpec, partition_indices
from tests.helpers import ROOT

SPEC = PartitionSpec("dirichlet", 20, alpha=0.5, min_partition_size=10, seed=3)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FEDSTALE_DATA_CACHE", str(folder))
    return folder


def _partitions(spec=SPEC):
    from fedstale.data import _indices  # pylint: disable=import-outside-toplevel

    _indices.cache_clear()  # the per-process cache in front of the disk
    return _indices("digits", 0.2, spec, 0, "")


def test_a_cached_split_and_partition_equal_the_computed_ones(cache):
    computed = _split(0.2, 3)
    first = load_digits_split(0.2, 3)  # computes and stores
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["digits"]
    second = load_digits_split(0.2, 3)  # reads
    for name, array in computed.items():
        for split in (first, second):
            got = getattr(split, name)
            assert got.dtype == array.dtype and got.shape == array.shape and got.tobytes() == array.tobytes()
    expected = partition_indices(computed["y_train"], SPEC)
    for parts in (_partitions(), _partitions()):  # computed and stored, then read
        assert len(parts) == 20
        assert all(p.dtype == np.int64 and np.array_equal(p, e) for p, e in zip(parts, expected))
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["digits", "partition"]


def test_every_input_and_library_version_is_part_of_the_key(cache, monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3)}

    for key in ({"seed": 0}, {"seed": 0}, {"seed": 1}, {"seed": 0, "numpy": "9.9"}):
        cached_arrays("thing", key, compute)
    assert len(calls) == 3 and len(list(cache.glob("thing-*.npz"))) == 3
    # a partition with another alpha is another entry; the same spec is not
    _partitions()
    _partitions()
    _partitions(PartitionSpec("dirichlet", 20, alpha=0.3, min_partition_size=10, seed=3))
    assert len(list(cache.glob("partition-*.npz"))) == 2
    real = cache_module.library_versions
    monkeypatch.setattr(
        "fedstale.data.library_versions", lambda *names: {**real(*names), "flwr-datasets": "0.0.0"}
    )
    _partitions()
    assert len(list(cache.glob("partition-*.npz"))) == 3


def test_a_broken_entry_is_computed_again_and_rewritten(cache):
    cached_arrays("thing", {"k": 1}, lambda: {"a": np.arange(4)})
    (entry,) = cache.glob("thing-*.npz")
    entry.write_bytes(b"not an npz")
    again = cached_arrays("thing", {"k": 1}, lambda: {"a": np.arange(4) * 2})
    assert again["a"].tolist() == [0, 2, 4, 6]
    assert cached_arrays("thing", {"k": 1}, lambda: {"a": np.zeros(1)})["a"].tolist() == [0, 2, 4, 6]
    assert [p.name for p in cache.iterdir()] == [entry.name]  # no temporary file left


def test_a_failed_computation_stores_nothing(cache):
    def fail():
        raise ValueError("cannot split")

    with pytest.raises(ValueError, match="cannot split"):
        cached_arrays("thing", {"k": 1}, fail)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSTALE_DATA_CACHE", "off")
    monkeypatch.chdir(tmp_path)
    assert cached_arrays("thing", {"k": 1}, lambda: {"a": np.arange(2)})["a"].tolist() == [0, 1]
    assert list(tmp_path.iterdir()) == []


def test_the_default_folder_is_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDSTALE_DATA_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    cached_arrays("thing", {"k": 1}, lambda: {"a": np.arange(2)})
    assert [p.parent for p in tmp_path.rglob("*.npz")] == [tmp_path / ".cache" / "fedstale"]


def test_a_warm_process_imports_neither_scikit_learn_nor_flwr_datasets(cache):
    script = (
        "import json, sys\n"
        "from fedstale.data import client_partitions, load_split\n"
        "from fedstale.data.partition import PartitionSpec\n"
        "spec = PartitionSpec('dirichlet', 20, alpha=0.5, min_partition_size=10, seed=3)\n"
        "parts = client_partitions('digits', 0.2, spec)\n"
        "test = load_split('digits', 0.2, 3).y_test\n"
        "heavy = [m for m in ('sklearn', 'flwr_datasets', 'datasets') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'sizes': [len(p) for p in parts], 'test': int(test.sum())}))\n"
    )
    env = dict(os.environ, FEDSTALE_DATA_CACHE=str(cache))
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                                  text=True, check=True).stdout)
        for _ in range(2)
    ]
    assert runs[0]["heavy"] == ["sklearn", "flwr_datasets", "datasets"]  # cold: computed
    assert runs[1]["heavy"] == []  # warm: read back
    assert runs[0]["sizes"] == runs[1]["sizes"] and runs[0]["test"] == runs[1]["test"]
