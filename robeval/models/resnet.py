"""``resnet18`` and ``resnet50``: one ResNet (He et al., 2016) with a selectable stem.

Used by Absum (appendix, "CIFAR10, CIFAR100, SVHN, and ImageNet": ResNet-18 following
kuangliu/pytorch-cifar) and by the smooth-kernels paper (appendix: ResNet18 on CIFAR10,
ResNet50 on Restricted ImageNet).

* ``stem="cifar"``: a 3x3 stride-1 convolution and no max pooling, as in the CIFAR
  ResNets of kuangliu/pytorch-cifar, RobustBench and AutoAttack (11,173,962 parameters
  for ResNet18 with 10 classes).
* ``stem="imagenet"``: a 7x7 stride-2 convolution and 3x3 max pooling, as in torchvision.

Module names and shapes follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ``fc`` ...), so ``torchvision.models.resnet50`` weights load
into ``resnet50:stem=imagenet`` with 1000 classes unchanged. Bottlenecks put the stride
on the 3x3 convolution (torchvision's "ResNet v1.5"). An adaptive average pool makes
every input size work.
"""

from __future__ import annotations

import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.models.build import architectures
from robeval.models.layers import make_activation, require_positive

#: Inputs up to this size get the CIFAR stem when ``stem="auto"``.
CIFAR_STEM_MAX_SIZE = 64


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = make_activation(activation)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, with a residual connection (ResNet50+)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act = make_activation(activation)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(out + identity)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(_conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """A ResNet with torchvision's module layout and a CIFAR or ImageNet stem."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        in_channels: int,
        num_classes: int,
        activation: str = "relu",
        stem: str = "cifar",
        width: int = 64,
    ) -> None:
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = make_activation(activation)
        self.in_planes = width
        self.layer1 = self._make_layer(block, width, layers[0], 1, activation)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2, activation)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2, activation)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2, activation)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        activation: str,
    ) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1, activation))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resolve_stem(arch: str, stem: str, input_size: int) -> str:
    key = stem.lower()
    if key == "auto":
        return "cifar" if input_size <= CIFAR_STEM_MAX_SIZE else "imagenet"
    if key not in ("cifar", "imagenet"):
        raise RobevalError(
            f"arch arg stem of {arch!r} must be auto, cifar or imagenet, got {stem!r}; fix it"
        )
    return key


@architectures.register("resnet18")
def resnet18(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    stem: str = "auto",
    width: int = 64,
) -> nn.Module:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); Absum appendix and smooth-kernels appendix.

    Arch args: ``stem`` = ``"cifar"`` (3x3 stride 1, no max pool), ``"imagenet"`` (7x7
    stride 2 + max pool) or ``"auto"`` (cifar for inputs up to 64x64); ``width`` = base
    width (64; the four stages have width x1, x2, x4, x8 channels).
    """
    require_positive("resnet18", width=width)
    return ResNet(
        BasicBlock,
        (2, 2, 2, 2),
        in_channels=in_channels,
        num_classes=num_classes,
        activation=activation,
        stem=_resolve_stem("resnet18", stem, input_size),
        width=width,
    )


@architectures.register("resnet50")
def resnet50(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    stem: str = "auto",
    width: int = 64,
) -> nn.Module:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); smooth-kernels appendix (Restricted ImageNet).

    Same arch args as ``resnet18``. With ``stem=imagenet`` and 1000 classes it has the
    25,557,032 parameters and the state_dict layout of ``torchvision.models.resnet50``.
    """
    require_positive("resnet50", width=width)
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        in_channels=in_channels,
        num_classes=num_classes,
        activation=activation,
        stem=_resolve_stem("resnet50", stem, input_size),
        width=width,
    )
