"""``small-cnn``: a tiny two-conv net for fast tests and small images (8x8 digits and up).

Not from a paper; it exists so that tests and the scikit-learn digits data set train in
seconds on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from robeval.models.build import architectures
from robeval.models.layers import (
    conv_output_size,
    make_activation,
    require_input_size,
    require_positive,
)


@architectures.register("small-cnn")
class SmallCNN(nn.Module):
    """A tiny CNN for tests and 8x8 digits; arch args ``c1``/``c2`` conv channels (16, 32).

    Works for inputs of 4x4 and larger.

    Layers: conv(c1,3,p1) -> act -> pool -> conv(c2,3,p1) -> act -> pool -> fc.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str = "relu",
        c1: int = 16,
        c2: int = 32,
    ) -> None:
        super().__init__()
        require_positive("small-cnn", c1=c1, c2=c2)
        side = require_input_size(
            "small-cnn", input_size, lambda s: conv_output_size(s, 3, padding=1) // 2 // 2
        )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1),
            make_activation(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            make_activation(activation),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(c2 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))
