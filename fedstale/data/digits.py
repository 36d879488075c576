"""scikit-learn's bundled handwritten digits (1,797 8×8 images, 10 classes).

The offline default: it ships inside scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from .cache import cached_arrays, library_versions
from .spec import DatasetSpec, SplitData


def load_digits_split(test_fraction: float, seed: int) -> SplitData:
    """Return a stratified train/test split of the digits, pixels in [0, 1].

    The split is kept in the data cache (:mod:`fedstale.data.cache`), keyed
    by ``test_fraction``, ``seed`` and the scikit-learn and NumPy versions.
    """
    arrays = cached_arrays(
        "digits-split",
        {"test_fraction": test_fraction, "seed": seed, **library_versions("scikit-learn", "numpy")},
        lambda: _split(test_fraction, seed),
    )
    return SplitData(spec=DatasetSpec(name="digits", input_shape=(1, 8, 8), num_classes=10), **arrays)


def _split(test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
