"""Fast gradient sign method (Goodfellow et al., ICLR 2015, Eq. 3) and its L2 variant."""

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
    """One gradient step of size ``eps``: ``x + eps * sign(grad_x CE)`` clipped to [0, 1].

    ``norm="l2"`` gives the fast gradient method ``x + eps * g / ||g||_2``. Matches
    foolbox's ``FGSM`` / ``FGM`` (no random start).
    """

    name: ClassVar[str] = "fgsm"
    norm: Norm = "linf"

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if eps == 0:
            return x.detach().clone()
        grad = loss_gradient(model, x, y)
        return (x.detach() + eps * normalized_step(grad, self.norm)).clamp(0.0, 1.0)
