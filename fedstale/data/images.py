"""Image-classification datasets: MNIST, Fashion-MNIST, CIFAR-10/100 and any torchvision dataset.

Each YAML name (``data.dataset``) maps to the Hugging Face dataset that
Flower's own examples use (what ``flwr_datasets.FederatedDataset`` would
download), with its official train/test split. Where the data comes from is
``data.path``:

================================  ==============================================================
``data.path``                     how it is read
================================  ==============================================================
empty (default)                   ``datasets.load_dataset(<hub id>)``: downloaded once, then
                                  served from the Hugging Face cache (``HF_HOME``); needs internet
                                  the first time
a folder saved by ``datasets``    ``datasets.load_from_disk(path)`` (a ``DatasetDict`` with
(``dataset_dict.json`` in it)     ``train`` and ``test``, e.g. ``load_dataset(id).save_to_disk(p)``)
a folder of parquet files         pyarrow + PIL on the files whose name starts with ``train`` /
                                  ``test`` (anywhere below ``path``: the layout of a Hugging Face
                                  hub snapshot, images as encoded ``bytes``)
a torchvision root                ``torchvision.datasets.<Class>(path, train=..., download=False)``
                                  (the files torchvision's own ``download=True`` writes, e.g.
                                  ``MNIST/raw/*-ubyte`` or ``cifar-10-batches-py/``)
================================  ==============================================================

Any other ``torchvision.datasets`` image-classification dataset with a
``train=`` flag works through :func:`register_torchvision_dataset` (the
adapter: name, class, shape, classes, normalisation); it is then read from
``data.path`` in the torchvision layout.

Images become float32 arrays (N, C, H, W) in [0, 1], normalised per channel
with the dataset's usual mean and standard deviation. ``data.test_fraction``
does not apply: these datasets come with their test split.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import DatasetSpec, SplitData


@dataclass(frozen=True)
class ImageDataset:
    """Where an image dataset comes from and how its arrays are normalised."""

    name: str
    hub_id: str
    image_key: str
    label_key: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: str
    augmentation: str = "none"
    """``none`` or ``crop_flip`` (random 4-pixel-padded crop and horizontal
    flip during local training, the usual CIFAR recipe)."""

    @property
    def spec(self) -> DatasetSpec:
        """Shape and classes."""
        return DatasetSpec(name=self.name, input_shape=self.input_shape, num_classes=self.num_classes)


IMAGE_DATASETS: dict[str, ImageDataset] = {
    "mnist": ImageDataset(
        "mnist", "ylecun/mnist", "image", "label", (1, 28, 28), 10,
        (0.1307,), (0.3081,), "MNIST",
    ),
    "fashion_mnist": ImageDataset(
        "fashion_mnist", "zalando-datasets/fashion_mnist", "image", "label", (1, 28, 28), 10,
        (0.2860,), (0.3530,), "FashionMNIST",
    ),
    "cifar10": ImageDataset(
        "cifar10", "uoft-cs/cifar10", "img", "label", (3, 32, 32), 10,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10", "crop_flip",
    ),
    "cifar100": ImageDataset(
        "cifar100", "uoft-cs/cifar100", "img", "fine_label", (3, 32, 32), 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100", "crop_flip",
    ),
}
"""Registry keyed by ``data.dataset`` (the Hugging Face ids are those of Flower's examples)."""


def register_torchvision_dataset(
    name: str,
    torchvision_class: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augmentation: str = "none",
) -> ImageDataset:
    """Make ``torchvision.datasets.<torchvision_class>`` available as ``data.dataset: name``.

    The class must take ``(root, train=bool, download=False)`` and yield
    (PIL image or array, int label); it is read from ``data.path``. Call this
    in a module both the ServerApp and the ClientApp import (e.g. your own
    ``server_app``/``client_app`` modules) before the configuration is
    validated; ``data.dataset`` then accepts ``name``.
    """
    dataset = ImageDataset(
        name, "", "image", "label", input_shape, num_classes, mean, std,
        torchvision_class, augmentation,
    )
    IMAGE_DATASETS[name] = dataset
    return dataset


def _layout(path: str) -> str:
    """Which of the documented layouts ``path`` is in (``hub`` when empty)."""
    if not path:
        return "hub"
    if not os.path.isdir(path):
        raise ValueError(f"data.path: '{path}' is not a folder; give a local copy (see docs/datasets-models.md)")
    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        return "saved"
    if glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True):
        return "parquet"
    return "torchvision"


def _parquet_files(path: str, split: str) -> list[str]:
    files = sorted(
        f for f in glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)
        if os.path.basename(f).startswith(split)
    )
    if not files:
        raise ValueError(
            f"data.path: no '{split}*.parquet' file under '{path}'; name the files "
            f"train-*.parquet and test-*.parquet (the Hugging Face hub layout)"
        )
    return files


def _hf_splits(info: ImageDataset, path: str, layout: str) -> tuple[Any, Any]:
    """The (train, test) ``datasets.Dataset`` of a hub, saved or parquet source."""
    import datasets  # pylint: disable=import-outside-toplevel

    if layout == "saved":
        loaded = datasets.load_from_disk(path)
    else:
        if not info.hub_id:
            raise ValueError(f"data.path: dataset '{info.name}' is read from a torchvision root; set data.path")
        try:
            loaded = datasets.load_dataset(info.hub_id)
        except Exception as err:  # no network, no cache: say what to do
            raise ValueError(
                f"data.dataset '{info.name}': could not load '{info.hub_id}' from the "
                f"Hugging Face hub or its cache ({type(err).__name__}); without internet set "
                f"data.path to a local copy (see docs/datasets-models.md)"
            ) from err
    for split in ("train", "test"):
        if split not in loaded:
            raise ValueError(f"data.path: '{path}' has no '{split}' split (found {list(loaded)})")
    return loaded["train"], loaded["test"]


def _hf_arrays(info: ImageDataset, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W[, C]) uint8 and labels of a Hugging Face split."""
    for key in (info.image_key, info.label_key):
        if key not in dataset.column_names:
            raise ValueError(
                f"data.path: the '{info.name}' data has no column '{key}' "
                f"(columns: {', '.join(dataset.column_names)})"
            )
    images = np.stack([np.asarray(image) for image in dataset[info.image_key]])
    return images, np.asarray(dataset[info.label_key], dtype=np.int64)


def _parquet_arrays(info: ImageDataset, path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the ``split*.parquet`` files under ``path``.

    Read with pyarrow and PIL rather than ``datasets.load_dataset("parquet")``,
    which would write an Arrow cache under ``~/.cache`` (fedstale writes
    nothing outside the working directory). Images are the hub's encoding:
    a struct with the PNG/JPEG ``bytes``.
    """
    import io  # pylint: disable=import-outside-toplevel

    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel

    table = pa.concat_tables([pq.read_table(f) for f in _parquet_files(path, split)])
    for key in (info.image_key, info.label_key):
        if key not in table.column_names:
            raise ValueError(
                f"data.path: the parquet files of '{info.name}' have no column '{key}' "
                f"(columns: {', '.join(table.column_names)})"
            )
    images = [
        np.asarray(Image.open(io.BytesIO(cell["bytes"])))
        for cell in table.column(info.image_key).to_pylist()
    ]
    labels = np.asarray(table.column(info.label_key).to_pylist(), dtype=np.int64)
    return np.stack(images), labels


def _torchvision_arrays(info: ImageDataset, path: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a torchvision dataset read from ``path`` (no download)."""
    import torchvision  # pylint: disable=import-outside-toplevel

    cls = getattr(torchvision.datasets, info.torchvision_class)
    try:
        dataset = cls(path, train=train, download=False)
    except RuntimeError as err:
        raise ValueError(
            f"data.path: '{path}' is neither a saved Hugging Face dataset (dataset_dict.json), "
            f"nor parquet files, nor a torchvision {info.torchvision_class} root ({err})"
        ) from err
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", None)
    if data is not None and targets is not None:  # MNIST family, CIFAR: arrays already
        images = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        return images, np.asarray(targets, dtype=np.int64)
    pairs = [dataset[i] for i in range(len(dataset))]
    return np.stack([np.asarray(p[0]) for p in pairs]), np.asarray([p[1] for p in pairs], dtype=np.int64)


def to_tensor_layout(info: ImageDataset, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) → normalised float32 (N, C, H, W)."""
    x = images.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if tuple(x.shape[1:]) != info.input_shape:
        raise ValueError(
            f"data.dataset '{info.name}': images have shape {tuple(x.shape[1:])}, "
            f"expected {info.input_shape}"
        )
    mean = np.asarray(info.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(info.std, dtype=np.float32)[None, :, None, None]
    return np.ascontiguousarray((x - mean) / std)


def load_image_split(name: str, path: str = "") -> SplitData:
    """The official train and test splits of image dataset ``name``, from ``path`` (see module)."""
    info = IMAGE_DATASETS[name]
    layout = _layout(path)
    if layout == "torchvision":
        (x_train, y_train), (x_test, y_test) = (
            _torchvision_arrays(info, path, train=True),
            _torchvision_arrays(info, path, train=False),
        )
    elif layout == "parquet":
        (x_train, y_train), (x_test, y_test) = (
            _parquet_arrays(info, path, "train"),
            _parquet_arrays(info, path, "test"),
        )
    else:
        train, test = _hf_splits(info, path, layout)
        (x_train, y_train), (x_test, y_test) = _hf_arrays(info, train), _hf_arrays(info, test)
    for labels in (y_train, y_test):
        if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
            raise ValueError(
                f"data.dataset '{info.name}': labels must be in 0..{info.num_classes - 1}, "
                f"found {labels.min()}..{labels.max()}"
            )
    return SplitData(
        spec=info.spec,
        x_train=to_tensor_layout(info, x_train),
        y_train=y_train,
        x_test=to_tensor_layout(info, x_test),
        y_test=y_test,
    )
