"""Absum (Kanai, Ida, Fujiwara, Yamada, Adachi: "Absum: Simple Regularization Method
for Reducing Structural Sensitivity of Convolutional Neural Networks", AAAI 2020,
Eq. 12-16)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.train.regularisers import conv_layers, regularisers


def absum_prox(kernels: Tensor, threshold: float) -> Tensor:
    """Absum's proximal operator (Eq. 13/15) applied to every 2-D filter of ``kernels``.

    ``kernels`` is ``(..., h, w)``; each ``h x w`` filter ``k`` (``n = h*w`` entries,
    the paper's ``h^2``) is mapped to ``argmin_u 0.5 ||u - k||^2 + t |sum u|`` with
    ``t = threshold / n``, i.e. ``threshold = n * t`` is the bound on the filter sum
    (for the update of Eq. 16, ``t = lr * lam`` and ``threshold = h^2 * lr * lam``):

    * ``sum k >  threshold``: ``k - t``
    * ``sum k < -threshold``: ``k + t``
    * ``|sum k| <= threshold``: ``k - (sum k) / n`` (the sum becomes exactly 0).
    """
    if threshold < 0:
        raise ValueError("threshold must be >= 0")
    n = kernels.shape[-2] * kernels.shape[-1]
    t = threshold / n
    s = kernels.sum(dim=(-2, -1), keepdim=True)
    return torch.where(s > threshold, kernels - t, torch.where(s < -threshold, kernels + t, kernels - s / n))


def absum_value(weight: Tensor) -> Tensor:
    """``sum over (out, in) filters of |sum_lm k_lm|`` for a conv weight ``(O, I, h, w)``."""
    return weight.sum(dim=(-2, -1)).abs().sum()


@regularisers.register("absum")
@dataclass(frozen=True, kw_only=True)
class Absum:
    """``lam * sum_i g(K_i)``, ``g(K) = |sum_lm k_lm|`` per (out, in) channel filter (Eq. 12,
    footnote 4) of every conv layer.

    ``solver=prox`` (default, the paper's method): ``penalty`` is 0 and, after every
    optimiser step with learning rate ``lr``, each filter is replaced by
    ``prox_{lr*lam*g}`` (Eq. 13, 16; :func:`absum_prox` with threshold
    ``h^2 * lr * lam``). With momentum or Adam the prox uses the current ``lr`` as is.
    ``solver=autograd``: the penalty is added to the loss and differentiated by
    autograd (``torch.abs`` has subgradient 0 at 0), the paper's comparison (Fig. 8).

    Default ``lam=1e-4`` (the paper's runtime experiment; it tunes over 10^1 ... 10^-7).
    """

    name: ClassVar[str] = "absum"
    aliases: ClassVar[dict[str, str]] = {"lambda": "lam"}
    lam: float = 1e-4
    solver: Literal["prox", "autograd"] = "prox"

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError("lam must be >= 0")

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        total = logits.new_zeros(())
        if self.solver == "prox":
            return total
        for _, conv in conv_layers(model):
            total = total + absum_value(conv.weight)
        return self.lam * total

    def after_step(self, model: nn.Module, lr: float) -> None:
        if self.solver != "prox" or self.lam == 0:
            return
        with torch.no_grad():
            for _, conv in conv_layers(model):
                w = conv.weight
                w.copy_(absum_prox(w, w.shape[-2] * w.shape[-1] * lr * self.lam))
