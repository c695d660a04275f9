"""Augmented Lagrangian Method for Adversarial attacks (Rony et al., CVPR 2021), through adv-lib."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks import advlib
from robeval.attacks.registry import attacks
from robeval.errors import RobevalError


@attacks.register("alma")
@dataclass(frozen=True, kw_only=True)
class ALMA:
    """ALMA, a minimal-norm attack by an augmented Lagrangian (Rony, Granger, Pedersoli and
    Ben Ayed, "Augmented Lagrangian Adversarial Attacks", ICCV 2021, arXiv:2011.11857),
    minimising the L2 (default) or L1 distance, run by adv-lib's ``adv_lib.attacks.alma``
    (written by the paper's first author).

    It minimises ``D(x, x + delta) + P(g(x + delta), rho, mu)`` over ``delta`` with RMSProp
    and momentum (``alpha``), where ``g`` is the difference-of-logits ratio of Croce &
    Hein (2020) shifted by ``logit_tolerance`` (negative: adversarial) and ``P`` the
    penalty-Lagrangian function ``P2`` (the paper's recommended choice), whose multiplier ``mu`` follows the
    penalty's derivative as an exponential moving average (weight ``alpha``) and whose
    penalty ``rho`` grows by ``rho_growth`` every ``check_steps`` steps where ``g`` fell by
    less than a factor ``tau`` and no adversarial was found. The learning rate starts at
    ``lr_init`` (or, with ``init_lr_distance``, at the rate whose first step moves the
    distance by that much, the paper's ``epsilon``) and decays exponentially by
    ``lr_reduction`` from the first adversarial step to the last. The adversarial of
    smallest distance met at any step is returned; each step is one forward and one
    backward pass of the batch.

    A minimal-norm attack (:mod:`robeval.attacks.base`): with ``eps=inf`` it returns the
    smallest adversarial per sample (``x`` where none), with a finite ``eps`` only those
    inside the ball. Targeted with ``target``. Defaults: adv-lib's, with AttackBench's
    ``init_lr_distance=1`` (Cinà et al. 2025, its ``alma`` configuration); the learning-
    rate probe's random direction (only for a zero gradient) comes from torch's global
    generator seeded from ``generator``.
    """

    name: ClassVar[str] = "alma"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = True
    nested: ClassVar[bool] = True  # minimal-norm: one unbounded search answers every eps
    norm: Literal["l2", "l1"] = "l2"
    steps: int = 1000
    init_lr_distance: float | None = 1.0
    lr_init: float = 0.1
    lr_reduction: float = 0.01
    mu_init: float = 1.0
    rho_init: float = 1.0
    check_steps: int = 10
    tau: float = 0.95
    rho_growth: float = 1.2
    alpha: float = 0.9
    logit_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if self.norm not in ("l2", "l1"):
            raise RobevalError(f"alma minimises l2 or l1 (got norm={self.norm}); use fmn:norm={self.norm}")
        if self.steps < 1 or self.check_steps < 1:
            raise RobevalError("alma needs steps >= 1 and check_steps >= 1; e.g. alma:steps=1000")
        if self.init_lr_distance is not None and not self.init_lr_distance > 0:
            raise RobevalError("alma needs init_lr_distance > 0, or none to start at lr_init")
        if not (self.lr_init > 0 and 0 < self.lr_reduction <= 1 and self.mu_init > 0 and self.rho_init > 0):
            raise RobevalError("alma needs lr_init, mu_init, rho_init > 0 and 0 < lr_reduction <= 1")
        if not (0 < self.tau < 1 and self.rho_growth > 1 and 0 <= self.alpha < 1 and self.logit_tolerance >= 0):
            raise RobevalError("alma needs 0 < tau < 1, rho_growth > 1, 0 <= alpha < 1 and logit_tolerance >= 0")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = math.inf,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        advlib.check_images(x0, self.name)
        classes = advlib.classes_for(x0, y.detach(), target, self.name)
        alma, penalties = advlib.library("alma"), advlib.library("all_penalties", "utils.lagrangian_penalties")
        with advlib.seeded(advlib.library_seed(generator), x0.device), torch.enable_grad():
            x_adv = alma(model, x0, classes, penalty=penalties["P2"], targeted=target is not None,
                         num_steps=self.steps, lr_init=self.lr_init, lr_reduction=self.lr_reduction,
                         distance=self.norm, init_lr_distance=self.init_lr_distance, μ_init=self.mu_init,
                         ρ_init=self.rho_init, check_steps=self.check_steps, τ=self.tau, γ=self.rho_growth,
                         α=self.alpha, logit_tolerance=self.logit_tolerance)
        return advlib.restrict(x0, x_adv.detach(), eps, self.norm)
