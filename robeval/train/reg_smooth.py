"""The smooth kernel regulariser (Wang, Wu, Chen, Xing: "Smooth Kernels Improve
Adversarial Robustness and Perceptually-Aligned Gradients", section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.train.regularisers import conv_layers, regularisers


def neighbour_sq_diffs(weight: Tensor, neighbourhood: int = 8) -> Tensor:
    """``sum over unordered neighbour pairs (w_ij - w_hk)^2`` per 2-D kernel.

    ``weight`` is ``(..., kh, kw)``; the result has shape ``(...)``. Each unordered pair
    is counted once (section 3: "counting each squared difference only once").
    ``neighbourhood=4``: horizontal and vertical neighbours; ``8`` adds both diagonals.
    """
    total = (weight[..., :, 1:] - weight[..., :, :-1]).pow(2).sum((-2, -1))
    total = total + (weight[..., 1:, :] - weight[..., :-1, :]).pow(2).sum((-2, -1))
    if neighbourhood == 8:
        total = total + (weight[..., 1:, 1:] - weight[..., :-1, :-1]).pow(2).sum((-2, -1))
        total = total + (weight[..., 1:, :-1] - weight[..., :-1, 1:]).pow(2).sum((-2, -1))
    return total


def smooth_kernel_r(weight: Tensor, neighbourhood: int = 8) -> Tensor:
    """``R(w) = exp( sum_pairs (w_ij - w_hk)^2 - sum_ij w_ij^2 )`` per 2-D kernel (shape ``(...)``)."""
    return torch.exp(neighbour_sq_diffs(weight, neighbourhood) - weight.pow(2).sum((-2, -1)))


@regularisers.register("smooth-kernel")
@dataclass(frozen=True, kw_only=True)
class SmoothKernel:
    """Penalise differences between spatially adjacent weights of every conv kernel.

    ``penalty = lam * sum_layers sum_{o,i} R(w[o, i])`` with (section 3, final form)
    ``R(w) = exp( sum_{unordered neighbour pairs} (w_ij - w_hk)^2 - sum_ij w_ij^2 )``
    over the two spatial dimensions of each (out, in) channel kernel. The subtracted
    scale term stops the trivial solution of shrinking all weights; the exponential
    strengthens the penalty when it is large and weakens it when small.

    *Per kernel, not per layer*: the paper regularises "only through these two
    dimensions, broadcasting the operation through the channels", so ``R`` is evaluated
    for each 2-D ``kh x kw`` slice and the values are summed over channels and layers.
    Taking the exponential of a whole layer's sum instead would overflow (a 64x64x3x3
    layer at initialisation gives exp of a few hundred) and couple unrelated kernels.

    *Neighbours*: the paper leaves ``N(i, j)`` as "the spatial neighbours"; the default
    ``neighbourhood=8`` uses the full 3x3 window around each weight (horizontal, vertical
    and diagonal pairs; 20 pairs in a 3x3 kernel), ``neighbourhood=4`` only horizontal
    and vertical pairs (12 pairs in a 3x3 kernel). Each unordered pair counts once.
    1x1 kernels have no neighbours and are skipped (``R`` would only reward growth).

    ``lam`` (typed as ``lambda`` or ``lam``: ``smooth-kernel:lambda=100``) defaults to
    100, the paper's value; a negative value (``lambda=-100``) pushes towards
    high-frequency kernels, the paper's "H" models (VH, TH, AH, LH).
    """

    name: ClassVar[str] = "smooth-kernel"
    aliases: ClassVar[dict[str, str]] = {"lambda": "lam", "lambda_": "lam"}
    lam: float = 100.0
    neighbourhood: Literal[4, 8] = 8

    def __post_init__(self) -> None:
        if self.neighbourhood not in (4, 8):
            raise ValueError("neighbourhood must be 4 or 8")

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        total = logits.new_zeros(())
        for _, conv in conv_layers(model):
            if conv.weight.shape[-2] * conv.weight.shape[-1] > 1:
                total = total + smooth_kernel_r(conv.weight, self.neighbourhood).sum()
        return self.lam * total

    def after_step(self, model: nn.Module, lr: float) -> None:
        return None
