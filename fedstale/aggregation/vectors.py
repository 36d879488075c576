"""Flat-vector view of a model: ArrayRecord ⇄ one float32 torch tensor.

Aggregation rules (weighted means, staleness mixing, robust reducers) are
easiest to write, test and vectorise on one 1-D tensor per model. A
:class:`ModelCodec` remembers the layout (names, shapes, dtypes) of the
global model and converts replies to that layout, rejecting any that do not
fit with an :class:`UpdateError` naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord


class UpdateError(ValueError):
    """A client update that cannot be merged into the global model."""


@dataclass(frozen=True)
class _Slot:
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    start: int
    stop: int


class ModelCodec:
    """Convert between an ArrayRecord with a fixed layout and a flat tensor.

    Parameters
    ----------
    template : ArrayRecord
        The global model; its key order, shapes and dtypes define the layout.
        Replies are matched by position (as Flower's NumPy API does), so a
        NumPyClient that returns a plain list of arrays works.
    """

    def __init__(self, template: ArrayRecord) -> None:
        slots = []
        offset = 0
        for key, array in template.items():
            arr = array.numpy()
            slots.append(
                _Slot(key, tuple(arr.shape), arr.dtype, offset, offset + arr.size)
            )
            offset += arr.size
        self._slots = tuple(slots)
        self.num_parameters = offset
        self.nbytes = sum(len(a.data) for a in template.values())

    @property
    def keys(self) -> list[str]:
        """Names of the arrays, in order."""
        return [s.key for s in self._slots]

    def flatten(self, record: ArrayRecord) -> torch.Tensor:
        """Return ``record`` as one float32 vector, checking it fits the layout.

        Raises
        ------
        UpdateError
            If the number of arrays, a shape or a dtype differs from the
            template, or a value is NaN or infinite.
        """
        arrays = list(record.values())
        if len(arrays) != len(self._slots):
            raise UpdateError(
                f"update has {len(arrays)} arrays, the model has {len(self._slots)}"
            )
        parts = []
        for slot, array in zip(self._slots, arrays):
            arr = array.numpy()
            if tuple(arr.shape) != slot.shape:
                raise UpdateError(
                    f"array '{slot.key}' has shape {tuple(arr.shape)}, "
                    f"expected {slot.shape}"
                )
            if arr.dtype != slot.dtype:
                raise UpdateError(
                    f"array '{slot.key}' has dtype {arr.dtype}, expected {slot.dtype}"
                )
            parts.append(np.asarray(arr, dtype=np.float32).ravel())
        flat = torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, "f4"))
        if not bool(torch.isfinite(flat).all()):
            raise UpdateError("update contains NaN or infinite values")
        return flat

    def unflatten(self, flat: torch.Tensor) -> ArrayRecord:
        """Return ``flat`` as an ArrayRecord with the template's layout."""
        values = flat.detach().cpu().numpy()
        record = ArrayRecord()
        for slot in self._slots:
            part = values[slot.start : slot.stop].reshape(slot.shape)
            if np.issubdtype(slot.dtype, np.integer):
                part = np.rint(part)
            # ascontiguousarray makes 0-d arrays 1-d: restore the slot's shape.
            array = np.ascontiguousarray(part.astype(slot.dtype)).reshape(slot.shape)
            record[slot.key] = Array(array)
        return record

    def to_state_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``flat`` as a PyTorch ``state_dict`` (for ``torch.save``)."""
        return dict(self.unflatten(flat).to_torch_state_dict())
