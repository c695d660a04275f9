"""Regularisers, one registry. A regulariser is a frozen dataclass with

* ``penalty(model, x, y, logits) -> Tensor`` (a scalar added to the objective), and
* ``after_step(model, lr) -> None`` for proximal or projection updates applied after
  each optimiser step (Absum's proximal operator, the spectral norm constraint).

Registered here: ``smooth-kernel`` (:mod:`robeval.train.reg_smooth`), ``absum``
(:mod:`robeval.train.reg_absum`), ``snc`` (:mod:`robeval.train.reg_snc`), ``l1`` and
``l2`` (:mod:`robeval.train.reg_norms`), ``gradient-norm`` and ``edge-alignment``
(:mod:`robeval.train.reg_gradient`), ``sgr`` (:mod:`robeval.train.reg_sgr`). A
regulariser class may declare ``aliases: ClassVar[dict[str, str]]`` mapping user-typed
keys to field names, for keys that cannot be Python identifiers
(``smooth-kernel:lambda=100`` -> field ``lam``).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from robeval.configs import build_config
from robeval.errors import RobevalError
from robeval.params import parse_named
from robeval.registry import Registry

regularisers: Registry[type] = Registry("regulariser")


class Regulariser(Protocol):
    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor: ...

    def after_step(self, model: nn.Module, lr: float) -> None: ...


def get_regulariser(spec: str) -> Regulariser:
    """A regulariser from ``name`` or ``name:key=value,...`` (e.g. ``absum:lam=1e-4``)."""
    name, params = parse_named(spec, kind="regulariser")
    cls = regularisers.get(name)
    aliases: dict[str, str] = getattr(cls, "aliases", {})
    renamed: dict = {}
    for key, value in params.items():
        field = aliases.get(key, key)
        if field in renamed:
            raise RobevalError(f"regulariser {name!r}: {key!r} and {field!r} name the same parameter; give one")
        renamed[field] = value
    return build_config(cls, renamed, what=f"regulariser {name!r}")


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` (subclasses included) in ``model``, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


# Register the built-in regularisers (they import the registry above).
from robeval.train import (  # noqa: F401
    reg_absum,
    reg_gradient,
    reg_norms,
    reg_sgr,
    reg_smooth,
    reg_snc,
)
