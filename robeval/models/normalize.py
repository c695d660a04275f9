"""``Normalize``: the wrapper that lets every model take [0,1] images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from robeval.errors import RobevalError


class Normalize(nn.Module):
    """``forward(x) = model((x - mean) / std)`` for images ``x`` in [0,1].

    ``mean``/``std`` are per-channel (or one value for all channels) and are stored as
    non-persistent buffers shaped (1, C, 1, 1), so they follow ``.to(device)`` but the
    wrapper's ``state_dict`` is just the inner net's under the ``model.`` prefix.
    Attacks work on the wrapper, so their budgets are in [0,1] pixel units.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, model: nn.Module, mean: Sequence[float] | float, std: Sequence[float] | float
    ) -> None:
        super().__init__()
        mean_t = _as_stat(mean, "mean")
        std_t = _as_stat(std, "std")
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise RobevalError(
                f"mean has {mean_t.numel()} values but std has {std_t.numel()}; "
                "give one value per channel for both"
            )
        if not bool((std_t > 0).all()):
            raise RobevalError(f"std must be > 0 for every channel, got {std_t.tolist()}; fix it")
        self.model = model
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = max(self.mean.shape[1], self.std.shape[1])
        if channels > 1 and x.dim() >= 2 and x.shape[1] != channels:
            raise RobevalError(
                f"the model normalises {channels} channels but got images with {x.shape[1]}; pass a data set "
                "with matching channels"
            )
        return self.model((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _as_stat(values: Sequence[float] | float | torch.Tensor, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float32).detach().flatten().clone()
    if tensor.numel() == 0 or not all(math.isfinite(v) for v in tensor.tolist()):
        raise RobevalError(f"{what} must be one or more finite numbers, got {values!r}; fix it")
    return tensor


class ResizeInput(nn.Module):
    """``forward(x) = model(bilinear_resize(x, size))`` when ``x`` is not ``size`` already.

    For third-party models with a fixed input size (a ViT made for 224 x 224) evaluated on
    smaller images: the resize is differentiable, so attacks still work, and budgets stay
    in the data set's own pixels. Bilinear weights sum to one, so resizing before or after
    :class:`Normalize` gives the same input.
    """

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.model(x)

    def extra_repr(self) -> str:
        return f"size={self.size}"
