"""``wrn``: the Wide ResNet of Zagoruyko & Komodakis (BMVC 2016).

The CIFAR network of the paper as TRADES, AutoAttack and RobustBench use it (their
``WideResNet``, the adversarial-training workhorse): a 3x3 convolution to 16 channels,
three groups of ``(depth - 4) / 6`` pre-activation blocks (BN, ReLU, 3x3 convolution,
twice) with 16, 32 and 64 times ``width`` channels and strides 1, 2, 2, then BN, ReLU,
global average pooling and a linear layer. WRN-28-10 with 10 classes has 36,479,194
parameters.

Module names and shapes follow RobustBench's ``robustbench.model_zoo.architectures.
wide_resnet.WideResNet`` (``conv1``, ``block1.layer.0.bn1``, ``...convShortcut``, ``bn1``,
``fc``), so its WRN-28-10 / WRN-34-10 state_dicts load unchanged. As there, a block whose
input and output widths differ applies its first BN+ReLU to the shortcut too. Activations
are never in-place (attacks take input gradients), and the final pool is adaptive, so
other input sizes work as well (for 32x32 it is the paper's 8x8 average pool).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robeval.errors import RobevalError
from robeval.models.build import architectures
from robeval.models.layers import make_activation, require_positive, require_probability


class WideBlock(nn.Module):
    """A pre-activation basic block: BN, act, 3x3 conv (strided), BN, act, dropout, 3x3 conv."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = make_activation(activation)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (  # noqa: N815  RobustBench's state_dict key
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + out


class WideGroup(nn.Module):
    """``n`` blocks at one width; the first one changes width and stride."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(
            WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout, activation)
            for i in range(n)
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-width for small (CIFAR-sized) inputs; see the module doc."""

    def __init__(
        self, *, depth: int, width: int, in_channels: int, num_classes: int, dropout: float, activation: str
    ) -> None:
        super().__init__()
        channels = (16, 16 * width, 32 * width, 64 * width)
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideGroup(n, channels[0], channels[1], 1, dropout, activation)
        self.block2 = WideGroup(n, channels[1], channels[2], 2, dropout, activation)
        self.block3 = WideGroup(n, channels[2], channels[3], 2, dropout, activation)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = make_activation(activation)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels[3], num_classes)
        for module in self.modules():  # the reference initialisation
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.pool(self.relu(self.bn1(out)))
        return self.fc(torch.flatten(out, 1))


def _check_depth(arch: str, depth: int) -> None:
    if depth < 10 or (depth - 4) % 6:
        raise RobevalError(
            f"arch arg depth of {arch!r} must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40 ...), got {depth}; fix it"
        )


@architectures.register("wrn")
def wrn(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    depth: int = 28,
    width: int = 10,
    dropout: float = 0.0,
) -> nn.Module:
    """Wide ResNet WRN-``depth``-``width`` (Zagoruyko & Komodakis 2016), TRADES/RobustBench layout.

    Arch args: ``depth`` = 6n+4 (28: WRN-28-10 of RobustBench's CIFAR entries; 34: TRADES's
    WRN-34-10); ``width`` = widening factor k (stages of 16k, 32k, 64k channels; note: a
    multiplier, not ``resnet18``'s base width); ``dropout`` between the two convolutions of
    each block (0.0, as in adversarial training).
    """
    del input_size  # any size works (adaptive pool); 32x32 is the paper's
    _check_depth("wrn", depth)
    require_positive("wrn", width=width)
    require_probability("wrn", dropout=dropout)
    return WideResNet(depth=depth, width=width, in_channels=in_channels, num_classes=num_classes,
                      dropout=dropout, activation=activation)

