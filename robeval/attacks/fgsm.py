"""Fast gradient sign method (Goodfellow et al., ICLR 2015, Eq. 3) and the L2 fast
gradient method (Miyato et al. 2016; foolbox's ``FGM``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robeval.attacks.base import Norm, normalized_step
from robeval.attacks.losses import LOSSES, Loss, objective_gradient
from robeval.attacks.registry import attacks


@attacks.register("fgsm")
@dataclass(frozen=True, kw_only=True)
class FGSM:
    """One gradient step of size ``eps``: ``x + eps * sign(grad_x CE(x, y))`` clipped to [0, 1].

    ``norm="l2"`` gives the fast gradient method ``x + eps * g / ||g||_2`` (also registered
    as ``fgm``). Targeted (``target`` given): one step *down* the cross-entropy of the
    target class, ``x - eps * s(grad_x CE(x, target))``. Matches foolbox's ``FGSM`` /
    ``FGM`` (no random start).

    ``loss`` (:mod:`robeval.attacks.losses`) picks the objective stepped up: ``ce``
    (default), ``margin`` (Carlini & Wagner, IEEE S&P 2017, Sec. V-A) or ``dlr`` (Croce &
    Hein, ICML 2020), each in its targeted form when ``target`` is given.
    """

    name: ClassVar[str] = "fgsm"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = True
    nested: ClassVar[bool] = True
    norm: Norm = "linf"
    loss: Loss = "ce"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        if eps == 0:
            return x.detach().clone()
        # Targeted objectives carry their sign (ce: -CE(x, target)), so this is the step
        # x - eps * s(grad CE(x, target)) exactly.
        grad, _, _ = objective_gradient(model, x, y, loss=self.loss, target=target)
        return (x.detach() + eps * normalized_step(grad, self.norm)).clamp(0.0, 1.0)


@attacks.register("fgm")
@dataclass(frozen=True, kw_only=True)
class FGM(FGSM):
    """The L2 fast gradient method: ``x + eps * g / ||g||_2`` with ``g = grad_x CE(x, y)``,
    clipped to [0, 1] (FGM column of SGR Table 3; foolbox's ``L2FastGradientAttack``).
    ``fgm`` is ``fgsm:norm=l2`` under its usual name."""

    name: ClassVar[str] = "fgm"
    nested: ClassVar[bool] = True
    norm: Norm = "l2"
