"""Regularisers, one registry. A regulariser is a frozen dataclass with

* ``penalty(model, x, y, logits) -> Tensor`` (a scalar added to the objective), and
* ``after_step(model, lr) -> None`` for proximal or projection updates applied after
  each optimiser step (Absum's proximal operator, the spectral norm constraint).

The papers' regularisers (smooth kernels, SGR, gradient norm, Absum, SNC, edge
alignment, L1/L2) arrive with the training module; the loop already calls both hooks.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from robeval.configs import build_config
from robeval.params import parse_named
from robeval.registry import Registry

regularisers: Registry[type] = Registry("regulariser")


class Regulariser(Protocol):
    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor: ...

    def after_step(self, model: nn.Module, lr: float) -> None: ...


def get_regulariser(spec: str) -> Regulariser:
    """A regulariser from ``name`` or ``name:key=value,...`` (e.g. ``absum:lam=1e-4``)."""
    name, params = parse_named(spec, kind="regulariser")
    return build_config(regularisers.get(name), params, what=f"regulariser {name!r}")
