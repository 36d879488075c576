"""Compressed client updates: the wire format and its (pure) decoder.

A client running :func:`fedstale.client.compression.compression_mod` replies
with one ArrayRecord holding a compressed update Δ̂ ≈ x_local − x_sent
instead of its model. The update is over the model flattened as
:class:`~fedstale.aggregation.vectors.ModelCodec` flattens it (every array of
the ArrayRecord, in order, raveled), so coordinate ``i`` of Δ̂ is
coordinate ``i`` of the server's flat model. Keys:

==========================  ========  =========================================
key                         dtype     content
==========================  ========  =========================================
``fedstale.delta.size``     int64     ``[d]``, the number of coordinates
``fedstale.delta.indices``  int32     the kept coordinates (top-k); absent
                                      when every coordinate is sent (int8
                                      quantisation without top-k)
``fedstale.delta.values``   float32   Δ̂ at ``indices`` (or all d of them)
                            or int8   quantised: Δ̂ = values · scale
``fedstale.delta.scale``    float32   ``[s]``, s = max|v| / 127; with int8
                                      values only
==========================  ========  =========================================

Coordinates not listed are 0. On the wire a top-k update with float32 values
costs 8 bytes per kept coordinate (4 with int8) plus Flower's fixed
per-array header, against 4 bytes per coordinate for the dense model.

:func:`decode_delta` is the pure decoder (the client uses it too, so the
error it feeds back is exactly what the server reconstructs);
:func:`read_compressed` checks a reply against the model size first and
raises :class:`~fedstale.aggregation.vectors.UpdateError` naming the key.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord

from .vectors import UpdateError

PREFIX = "fedstale.delta."
SIZE_KEY = PREFIX + "size"
INDICES_KEY = PREFIX + "indices"
VALUES_KEY = PREFIX + "values"
SCALE_KEY = PREFIX + "scale"
KEYS = (SIZE_KEY, INDICES_KEY, VALUES_KEY, SCALE_KEY)
"""Every key of the compressed format, in the order a client writes them."""

INT8_LEVELS = 127
"""int8 quantisation maps [-max|v|, max|v|] onto the integers [-127, 127]."""


def is_compressed(arrays: ArrayRecord) -> bool:
    """Whether ``arrays`` is a compressed update (any key starts with ``fedstale.delta.``)."""
    return any(key.startswith(PREFIX) for key in arrays.keys())


def decode_delta(
    indices: np.ndarray | None, values: np.ndarray, scale: float | None, size: int
) -> torch.Tensor:
    """The dense float32 update Δ̂ of a (checked) compressed update.

    Parameters
    ----------
    indices : np.ndarray or None
        Kept coordinates (distinct, in ``[0, size)``); None means
        ``values`` holds all ``size`` coordinates in order.
    values : np.ndarray
        float32 values, or int8 levels when ``scale`` is given.
    scale : float or None
        The int8 step: Δ̂ = values · scale (computed in float32).
    size : int
        Number of coordinates d of the model.

    Returns
    -------
    torch.Tensor
        A float32 vector of length ``size``, 0 outside ``indices``.
    """
    kept = values.astype(np.float32)
    if scale is not None:
        kept = kept * np.float32(scale)
    dense = torch.zeros(size, dtype=torch.float32)
    if indices is None:
        dense[:] = torch.from_numpy(kept)
    else:
        dense[torch.from_numpy(indices.astype(np.int64))] = torch.from_numpy(kept)
    return dense


def _one(arrays: ArrayRecord, key: str, dtype: type, what: str) -> np.ndarray:
    """``arrays[key]`` as a 1-D ndarray of ``dtype``; UpdateError naming the key otherwise."""
    if key not in arrays:
        raise UpdateError(f"compressed update has no '{key}' ({what})")
    array = arrays[key].numpy()
    if array.dtype != np.dtype(dtype):
        raise UpdateError(
            f"compressed update: '{key}' has dtype {array.dtype}, expected {np.dtype(dtype)}"
        )
    if array.ndim != 1:
        raise UpdateError(
            f"compressed update: '{key}' has shape {array.shape}, expected a 1-D array"
        )
    return array


def _read_size(arrays: ArrayRecord, num_parameters: int) -> int:
    size = _one(arrays, SIZE_KEY, np.int64, "the number of coordinates")
    if size.shape != (1,) or int(size[0]) != num_parameters:
        raise UpdateError(
            f"compressed update: '{SIZE_KEY}' is {size.tolist()}, the model has "
            f"{num_parameters} coordinates"
        )
    return num_parameters


def _read_indices(arrays: ArrayRecord, size: int) -> np.ndarray | None:
    if INDICES_KEY not in arrays:
        return None
    indices = _one(arrays, INDICES_KEY, np.int32, "the kept coordinates")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise UpdateError(
            f"compressed update: '{INDICES_KEY}' has indices outside [0, {size})"
        )
    if np.unique(indices).size != indices.size:
        raise UpdateError(f"compressed update: '{INDICES_KEY}' has duplicated indices")
    return indices


def _read_values(arrays: ArrayRecord, count: int) -> tuple[np.ndarray, float | None]:
    if VALUES_KEY not in arrays:
        raise UpdateError(f"compressed update has no '{VALUES_KEY}' (the kept values)")
    dtype = arrays[VALUES_KEY].numpy().dtype
    if dtype not in (np.dtype(np.float32), np.dtype(np.int8)):
        raise UpdateError(
            f"compressed update: '{VALUES_KEY}' has dtype {dtype}, expected float32 or int8"
        )
    expected = np.int8 if dtype == np.int8 else np.float32
    values = _one(arrays, VALUES_KEY, expected, "the kept values")
    if values.size != count:
        raise UpdateError(
            f"compressed update: '{VALUES_KEY}' has {values.size} values, expected {count}"
        )
    if expected is np.float32:
        if SCALE_KEY in arrays:
            raise UpdateError(
                f"compressed update: '{SCALE_KEY}' is only for int8 '{VALUES_KEY}', "
                "the values are float32"
            )
        if not np.isfinite(values).all():
            raise UpdateError(f"compressed update: '{VALUES_KEY}' has NaN or infinite values")
        return values, None
    scale = _one(arrays, SCALE_KEY, np.float32, "the int8 step, required with int8 values")
    if scale.shape != (1,) or not np.isfinite(scale[0]) or scale[0] < 0:
        raise UpdateError(
            f"compressed update: '{SCALE_KEY}' must be one finite value >= 0, got {scale.tolist()}"
        )
    return values, float(scale[0])


def read_compressed(arrays: ArrayRecord, num_parameters: int) -> torch.Tensor:
    """Check a compressed update against the model and decode it (:func:`decode_delta`).

    Parameters
    ----------
    arrays : ArrayRecord
        A reply's ArrayRecord in the format of this module.
    num_parameters : int
        The model's number of coordinates d.

    Returns
    -------
    torch.Tensor
        The dense float32 update Δ̂ (length d).

    Raises
    ------
    UpdateError
        Naming the key: an unknown or missing key, a wrong dtype or shape,
        ``size`` ≠ d, indices out of range or duplicated, non-finite values,
        a missing or invalid scale with int8 values.
    """
    for key in arrays.keys():
        if key not in KEYS:
            raise UpdateError(
                f"compressed update: unknown key '{key}'; accepted: {', '.join(KEYS)}"
            )
    size = _read_size(arrays, num_parameters)
    indices = _read_indices(arrays, size)
    values, scale = _read_values(arrays, size if indices is None else indices.size)
    return decode_delta(indices, values, scale, size)
