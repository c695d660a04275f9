"""Auto-PGD (Croce & Hein, ICML 2020; L1: Croce & Hein, ICML 2021), through adv-lib."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks import advlib
from robeval.attacks.registry import attacks
from robeval.errors import RobevalError

log = logging.getLogger(__name__)


@attacks.register("apgd")
@dataclass(frozen=True, kw_only=True)
class APGD:
    """Auto-PGD, a budgeted attack (Croce and Hein, "Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks", ICML 2020, Algorithm 1
    and Sec. 3; the L1 version from Croce and Hein, "Mind the box: l1-APGD for sparse
    adversarial attacks on image classifiers", ICML 2021), run by adv-lib's
    ``adv_lib.attacks.apgd`` / ``apgd_targeted`` (adapted from the authors' code).

    PGD with momentum (0.75) whose step size starts at ``2 eps`` (L1: ``eps``) and is
    halved at checkpoints (after 22 %, then shrinking intervals, of ``steps``) where the
    loss rose in fewer than ``rho`` of the steps since the last checkpoint or the best
    loss did not improve; the iterate then restarts from the best point. ``loss``: the
    cross-entropy (``ce``, APGD-CE) or the difference-of-logits ratio (``dlr``, APGD-DLR,
    Eq. 6, invariant to the logits' scale). L1 uses the sparse steps and the box-aware L1
    projection of the 2021 paper; ``large_reps`` runs its three phases at 3, 2 and 1
    times ``eps`` (the paper's recommendation for L1, off by default as in adv-lib).
    ``restarts`` random starts for the points still robust. ``targets=k > 0`` is APGD-T
    (AutoAttack's ``apgd-t``): the targeted loss towards each of the ``k`` most likely
    other classes in turn, on the points still robust (``k * restarts`` runs at most).
    With ``target`` (robeval's targeted mode) the loss is descended towards it.

    A budgeted attack (``nested``: an adversarial in a smaller ball answers every larger
    ball): called once per eps of the grid, it returns, per point, the last iterate that
    fooled the model (``x`` where none did). Every step is one forward and one backward
    pass of the points still searched. The random starts come from torch's global
    generators seeded from ``generator`` (:func:`robeval.attacks.advlib.seeded`), so, as
    with AutoAttack, they depend on the device batch. An adversarial that leaves the
    eps-ball by more than the runner's tolerance (the L1 projection works in float32) is
    replaced by ``x`` and logged.
    """

    name: ClassVar[str] = "apgd"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = True
    nested: ClassVar[bool] = True  # budgeted search in a ball
    norm: Literal["linf", "l2", "l1"] = "linf"
    loss: Literal["ce", "dlr"] = "ce"
    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    targets: int = 0
    large_reps: bool = False

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2", "l1"):
            raise RobevalError(f"apgd attacks in linf, l2 or l1 balls (got norm={self.norm}); e.g. apgd:norm=l2")
        if self.loss not in ("ce", "dlr"):
            raise RobevalError(f"apgd's loss is ce or dlr (got {self.loss}); e.g. apgd:loss=dlr")
        if self.steps < 1 or self.restarts < 1:
            raise RobevalError("apgd needs steps >= 1 and restarts >= 1; e.g. apgd:steps=100,restarts=1")
        if not 0 < self.rho < 1:
            raise RobevalError(f"apgd needs 0 < rho < 1 (got {self.rho}); the paper uses 0.75")
        if self.targets < 0:
            raise RobevalError(f"apgd needs targets >= 0 (got {self.targets}); 9 is AutoAttack's apgd-t")
        if self.large_reps and self.norm != "l1":
            raise RobevalError("apgd's large_reps is for norm=l1 only; drop large_reps or add norm=l1")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        if not math.isfinite(eps):
            raise RobevalError("apgd is a budgeted attack; give a finite eps (or use a minimal-norm attack: fmn, ddn)")
        if target is not None and self.targets:
            raise RobevalError("apgd's targets=k picks its own targets; drop targets= to attack a given target")
        advlib.check_images(x0, self.name)
        classes = advlib.classes_for(x0, y.detach(), target, self.name)
        common = dict(eps=float(eps), norm=advlib.LP[self.norm], n_iter=self.steps, n_restarts=self.restarts,
                      loss_function=self.loss, rho=self.rho, use_large_reps=self.large_reps)
        with advlib.seeded(advlib.library_seed(generator), x0.device), torch.enable_grad():
            if self.targets:
                n_classes = int(model(x0[:1]).shape[-1])
                x_adv = advlib.library("apgd_targeted")(model, x0, classes, num_targets=min(self.targets,
                                                                                            n_classes - 1), **common)
            else:
                x_adv = advlib.library("apgd")(model, x0, classes, targeted=target is not None, **common)
        return _inside(x0, x_adv.detach(), float(eps), self.norm)


def _inside(x: Tensor, x_adv: Tensor, eps: float, norm: str) -> Tensor:
    """``x_adv`` in the [0, 1] box, with ``x`` where it left the eps-ball by more than the
    runner's tolerance (:mod:`robeval.eval.checks`)."""
    from robeval.eval.checks import BALL_ATOL, BALL_RTOL

    x_adv = x_adv.clamp(0, 1)
    outside = advlib.lp_norms(x_adv - x, norm) > eps * (1 + BALL_RTOL) + BALL_ATOL
    if bool(outside.any()):
        log.info("apgd: %d adversarial(s) left the %s ball of %g; returned as x", int(outside.sum()), norm, eps)
        x_adv = torch.where(outside.view(-1, *([1] * (x.dim() - 1))), x, x_adv)
    return x_adv
