"""Decoupled Direction and Norm (Rony et al., CVPR 2019), through adv-lib."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks import advlib
from robeval.attacks.registry import attacks
from robeval.errors import RobevalError


@attacks.register("ddn")
@dataclass(frozen=True, kw_only=True)
class DDN:
    """Decoupled Direction and Norm, a minimal-L2 attack (Rony, Hafemann, Oliveira, Ben
    Ayed, Sabourin and Granger, "Decoupling Direction and Norm for Efficient Gradient-Based
    L2 Adversarial Attacks and Defenses", CVPR 2019, Algorithm 1), run by adv-lib's
    ``adv_lib.attacks.ddn`` (written by the paper's first author).

    Each of ``steps`` iterations takes one gradient step of the cross-entropy (ascended
    untargeted, descended towards ``target``) on the perturbation ``delta``, with the
    gradient normalised to unit L2 norm and a step size cosine-annealed from 1 to 0.01,
    then sets the perturbation's norm to ``eps_k``: ``eps_{k+1} = (1 - gamma) eps_k`` when
    the iterate was adversarial, ``(1 + gamma) eps_k`` when not (Algorithm 1, lines 8-12;
    ``eps_0 = init_norm``, capped at the largest distance the [0, 1] box allows), and
    clips to the box; with ``levels`` the image is quantised to that many grey levels
    after each step (the paper's 8-bit constraint, adv-lib's default 256). The
    adversarial of smallest L2 norm met at any step is returned. Every step is one
    forward and one backward pass of the whole batch.

    A minimal-norm attack (:mod:`robeval.attacks.base`): with ``eps=inf`` it returns,
    per sample, the smallest adversarial found (``x`` where none was), with a finite
    ``eps`` only those inside the ball. Targeted with ``target``. Defaults are adv-lib's
    (``steps=100, gamma=0.05, init_norm=1, levels=256``). DDN draws random numbers only
    for a gradient of zero norm; they come from torch's global generator seeded from
    ``generator`` (:func:`robeval.attacks.advlib.seeded`).
    """

    name: ClassVar[str] = "ddn"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = True
    nested: ClassVar[bool] = True  # minimal-norm: one unbounded search answers every eps
    norm: Literal["l2"] = "l2"
    steps: int = 100
    gamma: float = 0.05
    init_norm: float = 1.0
    levels: int | None = 256

    def __post_init__(self) -> None:
        if self.norm != "l2":
            raise RobevalError(f"ddn minimises the L2 norm only (got norm={self.norm}); use fmn:norm={self.norm}")
        if self.steps < 1:
            raise RobevalError(f"ddn needs steps >= 1 (got {self.steps}); e.g. ddn:steps=100")
        if not 0 < self.gamma < 1:
            raise RobevalError(f"ddn needs 0 < gamma < 1 (got {self.gamma}); the paper uses gamma=0.05")
        if not self.init_norm > 0:
            raise RobevalError(f"ddn needs init_norm > 0 (got {self.init_norm}); e.g. ddn:init_norm=1")
        if self.levels is not None and self.levels < 2:
            raise RobevalError(f"ddn needs levels >= 2 or none (got {self.levels}); 256 is 8-bit images")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = math.inf,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        advlib.check_images(x0, self.name)
        classes = advlib.classes_for(x0, y.detach(), target, self.name)
        ddn = advlib.library("ddn")
        with advlib.seeded(advlib.library_seed(generator), x0.device), torch.enable_grad():
            x_adv = ddn(model, x0, classes, targeted=target is not None, steps=self.steps, γ=self.gamma,
                        init_norm=self.init_norm, levels=self.levels)
        return advlib.restrict(x0, x_adv.detach(), eps, self.norm)
