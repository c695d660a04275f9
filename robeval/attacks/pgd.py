"""Projected gradient descent (Madry et al., ICLR 2018, Eq. 2), L-inf and L2, with
random restarts and a targeted mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robeval.attacks.base import (
    Norm,
    loss_gradient,
    normalized_step,
    project,
    random_in_ball,
)
from robeval.attacks.registry import attacks


@attacks.register("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD:
    """Iterated gradient ascent on the cross-entropy, projected onto the eps-ball and [0, 1].

    ``x_{t+1} = Proj_{B(x, eps) ∩ [0,1]}( x_t + alpha * s(grad_x CE(x_t, y)) )`` with
    ``s = sign`` for L-inf and ``g/||g||_2`` for L2, ``alpha = rel_stepsize * eps`` (or
    ``abs_stepsize`` when given). With ``random_start`` the first iterate is drawn
    uniformly from the eps-ball. Step order and projection follow foolbox 3's
    ``LinfPGD``/``L2PGD``, so results agree with it for the same settings.

    ``restarts=R`` runs the attack up to ``R`` times from fresh random starts; a sample
    fooled by one run keeps that adversarial and is not attacked again (Madry et al.
    report the worst case over restarts). Targeted (``target`` given): descend the
    cross-entropy of the target class instead, and a restart counts as a success only
    when the model predicts the target.

    Defaults: 10 steps of ``2.5 * eps / steps`` (Madry et al.'s rule), one run. The
    papers' recipes: MNIST eps 0.3, 40 steps of 0.01 (``steps=40,abs_stepsize=0.01``);
    CIFAR eps 8/255, 7 steps of 2/255 in training, 100 for evaluation.
    """

    name: ClassVar[str] = "pgd"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = True
    norm: Norm = "linf"
    steps: int = 10
    rel_stepsize: float = 0.25
    abs_stepsize: float | None = None
    random_start: bool = True
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.restarts < 1:
            raise ValueError("restarts must be >= 1")
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 repeat the same run without random_start; set random_start=true")
        if self.rel_stepsize <= 0 or (self.abs_stepsize is not None and self.abs_stepsize <= 0):
            raise ValueError("step sizes must be > 0")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x0 = x.detach()
        if eps == 0:
            return x0.clone()
        best = self._run(model, x0, y, eps, generator, target)
        for _ in range(self.restarts - 1):
            with torch.no_grad():
                pred = model(best).argmax(1)
            todo = (pred == y if target is None else pred != target).nonzero().flatten()
            if len(todo) == 0:
                break
            retry = self._run(
                model, x0[todo], y[todo], eps, generator, None if target is None else target[todo]
            )
            best[todo] = retry
        return best

    def _run(
        self, model: nn.Module, x0: Tensor, y: Tensor, eps: float,
        generator: torch.Generator | None, target: Tensor | None,
    ) -> Tensor:
        """One run of ``steps`` projected steps from a (random) start."""
        alpha = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps
        sign, labels = (1.0, y) if target is None else (-1.0, target)
        if self.random_start:
            x_adv = (x0 + random_in_ball(x0, eps, self.norm, generator)).clamp_(0.0, 1.0)
        else:
            x_adv = x0.clone()
        for _ in range(self.steps):
            grad = loss_gradient(model, x_adv, labels)
            x_adv = x_adv + sign * alpha * normalized_step(grad, self.norm)
            x_adv = (x0 + project(x_adv - x0, eps, self.norm)).clamp_(0.0, 1.0)
        return x_adv
