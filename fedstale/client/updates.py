"""A client's update Δ = x_returned − x_received as one flat vector.

Client mods that rewrite a TRAIN reply (:mod:`fedstale.client.attacks`,
:mod:`fedstale.client.compression`) work on the update flattened in the
order of the ArrayRecord, as the server's
:class:`~fedstale.aggregation.vectors.ModelCodec` flattens the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import ArrayRecord


def flat_delta(
    sent: ArrayRecord, returned: ArrayRecord, keys: Sequence[str] | None = None
) -> np.ndarray:
    """Δ = returned − sent over ``keys``, in float64, raveled and concatenated.

    Parameters
    ----------
    sent, returned : ArrayRecord
        The model the client received and the one it returns.
    keys : sequence of str, optional
        The arrays to include, in this order; default every array of
        ``returned`` in record order.

    Returns
    -------
    np.ndarray
        A float64 vector with one entry per scalar of the chosen arrays.

    Raises
    ------
    ValueError
        If a key is missing from ``sent`` or an array changed shape.
    """
    keys = list(returned.keys()) if keys is None else list(keys)
    parts = []
    for key in keys:
        if key not in sent:
            raise ValueError(f"array '{key}' was returned but not sent")
        old, new = sent[key].numpy(), returned[key].numpy()
        if old.shape != new.shape:
            raise ValueError(f"array '{key}': sent {old.shape}, returned {new.shape}")
        parts.append((new.astype(np.float64) - old.astype(np.float64)).ravel())
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)
