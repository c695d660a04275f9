"""Data augmentation for the CIFAR-style recipes: random crop with zero padding and a
horizontal flip (He et al. 2016; the absum, smooth-kernels and local-response-differences
ResNet recipes), batched and drawn from the training generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Each image zero-padded by ``padding``, cropped back to its size at a random offset
    and flipped left-right with probability 1/2 (random numbers drawn on the CPU)."""
    n, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
