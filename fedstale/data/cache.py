"""A disk cache of the digits split and of the clients' partition indices.

Every process of a run that touches the data (the ServerApp, each ClientApp
process or Ray worker, each warm SuperExec worker) otherwise splits the
digits with scikit-learn and partitions the pool with flwr-datasets itself:
importing scikit-learn, flwr-datasets and HF ``datasets`` costs about 3
CPU-seconds a process before any work, more than the partitioning. The
first process that computes a result stores it here; later ones (of this run
and of later runs from the same working directory) read it back, and never
import those libraries.

Where
    ``FEDSTALE_DATA_CACHE`` if set (``off``: no disk cache at all), else
    ``.cache/fedstale`` in the working directory, beside Matplotlib's cache
    (fedstale writes nothing to HOME).
Keys
    A SHA-256 of everything a result depends on: the function's inputs (for
    a partition, the pool's labels themselves), the versions of the
    libraries that compute it, and :data:`FORMAT`. A changed input or
    library is a new entry, never a stale one.
Entries
    ``.npz`` files written to a temporary file and renamed into place, so a
    process never reads half an entry; an entry that cannot be read is
    computed again and rewritten. Arrays come back exactly as they were
    stored (dtype, shape, bytes), so a run's rows do not depend on the cache
    (tested).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "cache_dir", "cached_arrays", "library_versions"]

FORMAT = 1
"""Bumped when what an entry holds changes."""

ENV = "FEDSTALE_DATA_CACHE"


def cache_dir() -> Path | None:
    """The cache folder (None: ``FEDSTALE_DATA_CACHE=off``)."""
    value = os.environ.get(ENV, "")
    if value.lower() == "off":
        return None
    return Path(value) if value else Path.cwd() / ".cache" / "fedstale"


def library_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of ``distributions`` (read from their metadata, nothing imported)."""
    versions = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _entry(kind: str, key: dict) -> str:
    text = json.dumps({"format": FORMAT, "kind": kind, **key}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.npz"


def cached_arrays(kind: str, key: dict, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()``, or what an earlier call with the same ``kind`` and ``key`` stored.

    Parameters
    ----------
    kind : str
        What is cached (a file-name prefix), e.g. ``digits-split``.
    key : dict
        JSON-serialisable; everything the result depends on.
    compute : callable
        Returns named arrays (no object arrays); its exceptions propagate and
        nothing is stored.
    """
    folder = cache_dir()
    if folder is None:
        return compute()
    path = folder / _entry(kind, key)
    stored = _read(path)
    if stored is not None:
        return stored
    arrays = compute()
    _write(path, arrays)
    return arrays


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The entry's arrays, or None if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` at ``path`` atomically; a read-only or full disk only
    costs the next process the computation."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".part", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; other users' processes may read it
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
