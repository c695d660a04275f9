"""L1 and L2 (weight decay as a penalty) baselines of the Absum paper (Kanai et al.,
"Absum: Simple Regularization Method for Reducing Structural Sensitivity of
Convolutional Neural Networks", experiments section: WD and L1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from robeval.train.regularisers import conv_layers, regularisers

Scope = Literal["conv", "all"]


def scoped_params(model: nn.Module, scope: str) -> list[Tensor]:
    """``conv``: the weights of every ``nn.Conv2d`` (no biases); ``all``: every parameter."""
    if scope == "conv":
        return [conv.weight for _, conv in conv_layers(model)]
    return list(model.parameters())


@dataclass(frozen=True, kw_only=True)
class _Norm:
    aliases: ClassVar[dict[str, str]] = {"lambda": "lam", "lambda_": "lam"}  # l1:lambda=1e-4, as the others
    lam: float = 1e-4
    scope: Scope = "conv"

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError("lam must be >= 0")

    def after_step(self, model: nn.Module, lr: float) -> None:
        return None


@regularisers.register("l2")
@dataclass(frozen=True, kw_only=True)
class L2(_Norm):
    """Weight decay as a penalty: ``lam * sum w^2`` (no factor 1/2).

    The gradient is ``2 * lam * w``, so ``l2:lam=L`` with SGD matches the optimiser's
    ``weight_decay=2L``. ``scope=conv`` (default) penalises conv filter weights only, as
    the Absum paper's baselines do ("regularization on conv filters"); ``scope=all``
    every parameter of the model, biases included. ``lam`` is typed as ``lambda`` or
    ``lam`` (``l2:lambda=1e-4``, as every regulariser). Default ``lam=1e-4`` (the paper's
    runtime experiment; its grid is 10^1 ... 10^-7).
    """

    name: ClassVar[str] = "l2"

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        total = logits.new_zeros(())
        for p in scoped_params(model, self.scope):
            total = total + p.pow(2).sum()
        return self.lam * total


@regularisers.register("l1")
@dataclass(frozen=True, kw_only=True)
class L1(_Norm):
    """``lam * sum |w|`` (subgradient 0 at 0); ``scope`` and ``lam`` as for ``l2``."""

    name: ClassVar[str] = "l1"

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        total = logits.new_zeros(())
        for p in scoped_params(model, self.scope):
            total = total + p.abs().sum()
        return self.lam * total
