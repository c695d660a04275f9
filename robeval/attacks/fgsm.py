"""Fast gradient sign method (Goodfellow et al., ICLR 2015, Eq. 3) and the L2 fast
gradient method (Miyato et al. 2016; foolbox's ``FGM``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robeval.attacks.base import Norm, loss_gradient, normalized_step
from robeval.attacks.registry import attacks


@attacks.register("fgsm")
@dataclass(frozen=True, kw_only=True)
class FGSM:
    """One gradient step of size ``eps``: ``x + eps * sign(grad_x CE(x, y))`` clipped to [0, 1].

    ``norm="l2"`` gives the fast gradient method ``x + eps * g / ||g||_2`` (also registered
    as ``fgm``). Targeted (``target`` given): one step *down* the cross-entropy of the
    target class, ``x - eps * s(grad_x CE(x, target))``. Matches foolbox's ``FGSM`` /
    ``FGM`` (no random start).
    """

    name: ClassVar[str] = "fgsm"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = True
    norm: Norm = "linf"

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        if eps == 0:
            return x.detach().clone()
        if target is None:
            step = normalized_step(loss_gradient(model, x, y), self.norm)
        else:
            step = -normalized_step(loss_gradient(model, x, target), self.norm)
        return (x.detach() + eps * step).clamp(0.0, 1.0)


@attacks.register("fgm")
@dataclass(frozen=True, kw_only=True)
class FGM(FGSM):
    """The L2 fast gradient method: ``x + eps * g / ||g||_2`` with ``g = grad_x CE(x, y)``,
    clipped to [0, 1] (FGM column of SGR Table 3; foolbox's ``L2FastGradientAttack``).
    ``fgm`` is ``fgsm:norm=l2`` under its usual name."""

    name: ClassVar[str] = "fgm"
    norm: Norm = "l2"
