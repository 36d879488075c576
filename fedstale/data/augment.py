"""Training-time augmentation on batches of normalised images (N, C, H, W).

Keyed by :attr:`fedstale.data.images.ImageDataset.augmentation`; applied by
:func:`fedstale.client.training.train` to each mini-batch when
``data.augment`` is true. Random draws come from the training generator, so
a local update stays deterministic for its seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PADDING = 4


def crop_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero-padding 4 pixels on each side, then a random horizontal flip
    (each with its own draw per image): the standard CIFAR recipe (He et al., 2016)."""
    n, _, height, width = batch.shape
    padded = F.pad(batch, (PADDING, PADDING, PADDING, PADDING))
    offsets = torch.randint(0, 2 * PADDING + 1, (n, 2), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5
    crops = torch.stack(
        [padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)]
    )
    return torch.where(flips.to(batch.device)[:, None, None, None], crops.flip(-1), crops)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None] = {
    "none": None,
    "crop_flip": crop_flip,
}
"""Registry keyed by the dataset's ``augmentation`` name."""
