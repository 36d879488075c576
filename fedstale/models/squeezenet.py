"""SqueezeNet 1.1 for small images (MNIST 28×28, CIFAR 32×32).

``torchvision.models.squeezenet1_1`` with its first conv changed from 3×3
stride 2 to 3×3 stride 1 (still unpadded) and taking any number of input
channels, so a 32×32 input still has 3×3 cells after the last Fire module
instead of 1×1. SqueezeNet has no normalisation layers, hence no buffers:
every ``state_dict`` entry is a float parameter.
"""

from __future__ import annotations

from torch import nn

from ..data.spec import DatasetSpec

MIN_INPUT_SIDE = 10
"""Smallest height and width the network accepts.

The unpadded stride-1 conv maps a side h to h − 2; each of the three
max-pools (kernel 3, stride 2, ``ceil_mode=True``) maps h to
⌈(h − 3) / 2⌉ + 1, which is ≥ 1 only when h ≥ 2. Going backwards: the third
pool needs 2, so the second needs 4, the first 8 and the conv 10.
"""


def squeezenet_small(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """SqueezeNet 1.1 with a 3×3 stride-1 first conv over ``input_shape[0]`` channels.

    727,626 parameters on (3, 32, 32) with 10 classes (726,474 with one
    input channel). Raises ``ValueError`` for inputs smaller than 10×10.
    """
    channels, height, width = input_shape
    if min(height, width) < MIN_INPUT_SIDE:
        raise ValueError(
            f"squeezenet needs inputs of at least {MIN_INPUT_SIDE}×{MIN_INPUT_SIDE} pixels, "
            f"got {height}×{width}"
        )
    import torchvision  # pylint: disable=import-outside-toplevel  # only when built

    model = torchvision.models.squeezenet1_1(num_classes=num_classes)
    first = nn.Conv2d(channels, 64, kernel_size=3, stride=1)
    nn.init.kaiming_uniform_(first.weight)  # as torchvision initialises its convs
    nn.init.zeros_(first.bias)
    model.features[0] = first
    return model


def build_squeezenet(spec: DatasetSpec) -> nn.Module:
    """SqueezeNet 1.1 sized for ``spec``."""
    return squeezenet_small(spec.input_shape, spec.num_classes)
