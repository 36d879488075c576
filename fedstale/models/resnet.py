"""ResNets for small images, with GroupNorm in place of BatchNorm.

- ``resnet8`` / ``resnet20``: the CIFAR ResNets of He et al. (CVPR 2016,
  section 4.2): a 3×3 conv stem with 16 channels, three stages of BasicBlocks
  with 16/32/64 channels and strides 1/2/2, global average pooling and one
  fully connected layer; n = 1 or 3 blocks per stage (6n + 2 layers). The
  shortcuts that change shape are the paper's option A (stride-2 subsampling
  and zero-padded channels), so they add no parameters.
- ``resnet18``: ``torchvision.models.resnet18`` with the usual CIFAR stem:
  ``conv1`` is a 3×3 stride-1 conv taking any number of input channels and
  ``maxpool`` is ``nn.Identity``, so 8×8, 28×28 and 32×32 inputs keep a useful
  spatial size through its four stages.

Why GroupNorm: BatchNorm's running mean and variance are ill-defined in
federated learning, where every client holds a different (non-IID) slice of
the data, and they travel in the ``state_dict`` as buffers (a float mean and
variance and an integer ``num_batches_tracked``) that averaging strategies
would have to special-case. GroupNorm normalises each example on its own and
has no buffers; Hsieh et al. (ICML 2020, "The non-IID data quagmire") show it
recovers most of the accuracy BatchNorm loses under skewed labels, and it is
the normalisation Opacus accepts for DP-SGD (BatchNorm mixes examples of a
batch, which per-example gradients forbid). These models therefore have no
buffers at all: every ``state_dict`` entry is a float parameter.

Groups: :func:`group_norm` uses 8 channels per group, capped at 32 groups
(Wu & He's default): 2 groups at 16 channels, 4 at 32, 8 at 64, 16 at 128 and
32 from 256 channels up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.spec import DatasetSpec

CHANNELS_PER_GROUP = 8
MAX_GROUPS = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with 8 channels per group, at most 32 groups."""
    groups = max(1, min(MAX_GROUPS, channels // CHANNELS_PER_GROUP))
    return nn.GroupNorm(groups, channels)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3×3 → GN → ReLU → conv3×3 → GN, plus the shortcut, → ReLU.

    When the block halves the resolution and widens the channels, the shortcut
    subsamples by 2 and zero-pads the new channels (option A: no parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.norm1 = group_norm(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.norm2 = group_norm(out_channels)
        self.stride = stride
        self.pad = out_channels - in_channels

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output."""
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet with ``blocks`` BasicBlocks per stage, GroupNorm.

    6·blocks + 2 layers. On (3, 32, 32) with 10 classes: 75,290 parameters
    for resnet8 (1 block per stage) and 269,722 for resnet20 (3 blocks; the
    paper's 0.27M); with one input channel, 288 fewer (75,002 and 269,434).
    The count does not depend on height and width.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, blocks: int) -> None:
        super().__init__()
        channels = input_shape[0]
        self.stem = nn.Sequential(_conv3x3(channels, 16), group_norm(16), nn.ReLU())
        stages: list[nn.Module] = []
        width = 16
        for out_width, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(blocks):
                stages.append(BasicBlock(width, out_width, stride if index == 0 else 1))
                width = out_width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        out = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(out, 1))


def resnet18_small(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """torchvision ResNet-18 with GroupNorm and the CIFAR stem (3×3 stride-1 conv, no max-pool).

    11,173,962 parameters on (3, 32, 32) with 10 classes (11,172,810 with one
    input channel).
    """
    import torchvision  # pylint: disable=import-outside-toplevel  # only when built

    model = torchvision.models.resnet18(num_classes=num_classes, norm_layer=group_norm)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def build_resnet8(spec: DatasetSpec) -> nn.Module:
    """ResNet-8 (1 block per stage) sized for ``spec``."""
    return CifarResNet(spec.input_shape, spec.num_classes, blocks=1)


def build_resnet20(spec: DatasetSpec) -> nn.Module:
    """ResNet-20 (3 blocks per stage) sized for ``spec``."""
    return CifarResNet(spec.input_shape, spec.num_classes, blocks=3)


def build_resnet18(spec: DatasetSpec) -> nn.Module:
    """ResNet-18 with the CIFAR stem, sized for ``spec``."""
    return resnet18_small(spec.input_shape, spec.num_classes)
