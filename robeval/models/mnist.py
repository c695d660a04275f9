"""``mnist-cnn``: the 2-conv + 2-fc MNIST / Fashion-MNIST net of the Absum paper.

Absum (Kanai et al.), appendix "MNIST and Fashion-MNIST": two 5x5 convolutions with
10 and 20 channels, stride 1, no zero padding, each followed by 2x2 max pooling and
ReLU; a 320x50 fully connected layer with ReLU; a 50x10 output layer; 50% dropout after
the second convolution and before the second fully connected layer. The smooth-kernels
paper (Wang et al., appendix) uses the same "two convolution layers and two fully
connected layers" model. Module names follow the classic PyTorch MNIST example
(``conv1``, ``conv2``, ``fc1``, ``fc2``) so its weights load as they are.
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
    require_positive,
    require_probability,
)


@architectures.register("mnist-cnn")
class MnistCNN(nn.Module):
    """The Absum / smooth-kernels MNIST net (Absum appendix, "MNIST and Fashion-MNIST").

    Arch args: ``c1``/``c2`` conv channels (10, 20), ``hidden`` fc width (50),
    ``dropout`` (0.5, used after conv2 and before fc2), ``padding`` of both 5x5 convs (0;
    inputs must then be at least 16x16, ``padding=2`` allows 4x4 and up).

    Layers: conv(c1,5) -> pool -> act -> conv(c2,5) -> dropout2d -> pool -> act -> fc
    -> act -> dropout -> fc.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str = "relu",
        c1: int = 10,
        c2: int = 20,
        hidden: int = 50,
        dropout: float = 0.5,
        padding: int = 0,
    ) -> None:
        super().__init__()
        require_positive("mnist-cnn", c1=c1, c2=c2, hidden=hidden)
        require_probability("mnist-cnn", dropout=dropout)
        if padding < 0:
            raise RobevalError(
                f"arch arg padding of 'mnist-cnn' must be >= 0, got {padding}; fix it"
            )

        def final(size: int) -> int:
            size = conv_output_size(size, 5, padding=padding) // 2
            return conv_output_size(size, 5, padding=padding) // 2

        side = require_input_size("mnist-cnn", input_size, final)
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5, padding=padding)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=padding)
        self.conv2_drop = nn.Dropout2d(dropout)
        self.pool = nn.MaxPool2d(2)
        self.act = make_activation(activation)
        self.fc1 = nn.Linear(c2 * side * side, hidden)  # 320 x 50 for 28x28 inputs
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.pool(self.conv1(x)))
        x = self.act(self.pool(self.conv2_drop(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = self.dropout(self.act(self.fc1(x)))
        return self.fc2(x)
