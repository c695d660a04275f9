"""``sgr-cnn``: the 4-conv + 3-fc CNN of Structured Gradient Regularization (SGR).

SGR (Roth et al.), section 7.4 "Classifier Architectures", Table 5: the model of
Carlini & Wagner (2017) -- four 3x3 convolutions (stride 1, no padding) with feature
maps params[0..3], max pooling after the second and fourth, then dense layers of
params[4], params[5] units and the output layer. MNIST params = [32, 32, 64, 64, 200,
200], CIFAR10 params = [64, 64, 128, 128, 256, 256].
"""

from __future__ import annotations

import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.models.build import architectures
from robeval.models.layers import (
    conv_output_size,
    make_activation,
    require_input_size,
    require_probability,
)

#: Layer widths of SGR Table 5 (the last entry, the number of classes, comes from data).
SGR_PARAMS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mnist": (32, 32, 64, 64, 200, 200),
    "cifar": (64, 64, 128, 128, 256, 256),
}


class SgrCNN(nn.Module):
    """conv3-conv3-pool-conv3-conv3-pool-fc-fc-fc with an activation after every hidden
    layer (SGR Table 5). Optional ``dropout`` after each hidden fc layer."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        widths: tuple[int, int, int, int, int, int],
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        require_probability("sgr-cnn", dropout=dropout)
        c1, c2, c3, c4, f1, f2 = widths

        def final(size: int) -> int:
            size = conv_output_size(conv_output_size(size, 3), 3) // 2
            return conv_output_size(conv_output_size(size, 3), 3) // 2

        side = require_input_size("sgr-cnn", input_size, final)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3),
            make_activation(activation),
            nn.Conv2d(c1, c2, 3),
            make_activation(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3),
            make_activation(activation),
            nn.Conv2d(c3, c4, 3),
            make_activation(activation),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c4 * side * side, f1),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(f1, f2),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(f2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@architectures.register("sgr-cnn")
def sgr_cnn(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    params: str = "auto",
    dropout: float = 0.0,
) -> nn.Module:
    """The Carlini & Wagner CNN used by SGR (section 7.4, Table 5).

    Arch args: ``params`` = ``"mnist"`` ([32,32,64,64,200,200]), ``"cifar"``
    ([64,64,128,128,256,256]) or ``"auto"`` (mnist for 1 input channel, else cifar);
    ``dropout`` after each hidden fc layer (0.0). Inputs must be at least 16x16.
    """
    key = params.lower()
    if key == "auto":
        key = "mnist" if in_channels == 1 else "cifar"
    if key not in SGR_PARAMS:
        raise RobevalError(
            f"arch arg params of 'sgr-cnn' must be auto, mnist or cifar, got {params!r}; fix it"
        )
    return SgrCNN(
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        widths=SGR_PARAMS[key],
        activation=activation,
        dropout=dropout,
    )
