"""The smooth kernel regulariser (Wang, Wu, Chen, Xing: "Smooth Kernels Improve
Adversarial Robustness and Perceptually-Aligned Gradients", section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.errors import RobevalError
from robeval.train.regularisers import conv_layers, regularisers

#: The regulariser's forms: the paper's final ``R(w)`` and its second heuristic.
FORMS: tuple[str, ...] = ("paper", "ratio")


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


def smooth_kernel_ratio(weight: Tensor, neighbourhood: int = 8) -> Tensor:
    """``R0(w) / sum_ij w_ij^2`` per 2-D kernel (shape ``(...)``), the paper's second
    heuristic (section 3: "directly divide R0(w) by the scale of w"), with
    ``R0(w) = sum over unordered neighbour pairs (w_ij - w_hk)^2``.

    Homogeneous of degree 0 (``R(c w) = R(w)`` for ``c != 0``), so its gradient is
    orthogonal to ``w`` (Euler); 0 for a constant kernel, and 0 by definition for an
    all-zero kernel (where the ratio is 0/0; its gradient there is 0 too)."""
    energy = weight.pow(2).sum((-2, -1))
    safe = torch.where(energy > 0, energy, torch.ones_like(energy))
    return torch.where(energy > 0, neighbour_sq_diffs(weight, neighbourhood) / safe, torch.zeros_like(energy))


@regularisers.register("smooth-kernel")
@dataclass(frozen=True, kw_only=True)
class SmoothKernel:
    """Penalise differences between spatially adjacent weights of every conv kernel.

    ``penalty = lam * sum_layers sum_{o,i} R(w[o, i])``, ``R`` one of two forms of
    section 3, with ``R0(w) = sum_{unordered neighbour pairs} (w_ij - w_hk)^2``:

    * ``form=paper`` (default; the paper's "final regularization"):
      ``R(w) = exp( R0(w) - sum_ij w_ij^2 )``. The subtracted scale term is the paper's
      first heuristic against shrinking all weights; the exponential strengthens the
      penalty when it is large and weakens it when small. *This exponent is indefinite*:
      it is the quadratic form ``w^T (L - I) w`` with ``L`` the Laplacian of the kernel
      grid's neighbour graph, and every Laplacian eigenvector with eigenvalue below 1 is
      a negative direction: the constant kernel (eigenvalue 0) on any kernel size, and on
      5x5 kernels (8-neighbourhood) also the two slowest ramps (eigenvalue 0.98). ``R``
      falls without bound as they grow, so with ``lam > 0`` it rewards growing a
      kernel's smooth part (``benchmarks/papers/smooth_kernels.py``, mnist-cnn, 3 epochs
      at ``lam=100``: conv2's mean ``sum w^2`` per kernel 0.168 against 0.065 without
      the regulariser and 0.053 with ``form=ratio``; mean ``|sum of kernel|`` 1.59
      against 0.29).
    * ``form=ratio``: ``R(w) = R0(w) / sum_ij w_ij^2``, the paper's second heuristic:
      "Another heuristic to fix this same problem is to directly divide R0(w) by the
      scale of w. Empirically, we do not observe significant differences between these
      two heuristics. We settle with the first heuristic because of the difficulty in
      calculating gradient when a matrix is the denominator." Scale-invariant and
      bounded below by 0 (reached by constant kernels): it changes the shape of each
      kernel, never rewards its size. No exponential (the paper applies its third
      heuristic to the final, first-heuristic form only).

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
    form: Literal["paper", "ratio"] = "paper"

    def __post_init__(self) -> None:
        if self.neighbourhood not in (4, 8):
            raise ValueError("neighbourhood must be 4 or 8")
        if self.form not in FORMS:
            raise RobevalError(f"smooth-kernel form must be one of {', '.join(FORMS)}; got {self.form!r}")

    def kernel_values(self, weight: Tensor) -> Tensor:
        """``R`` of every 2-D kernel of ``weight`` (``(..., kh, kw)`` -> ``(...)``), in this form."""
        if self.form == "ratio":
            return smooth_kernel_ratio(weight, self.neighbourhood)
        return smooth_kernel_r(weight, self.neighbourhood)

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        total = logits.new_zeros(())
        for _, conv in conv_layers(model):
            if conv.weight.shape[-2] * conv.weight.shape[-1] > 1:
                total = total + self.kernel_values(conv.weight).sum()
        return self.lam * total

    def after_step(self, model: nn.Module, lr: float) -> None:
        return None
