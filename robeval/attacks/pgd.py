"""Projected gradient descent (Madry et al., ICLR 2018, Eq. 2), L-inf and L2, with
random restarts, a targeted mode, best-iterate selection, the margin and DLR losses and
Expectation over Transformation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks import rng
from robeval.attacks.base import Norm, normalized_step, project, random_in_ball
from robeval.attacks.losses import LOSSES, Loss, is_adversarial, objective_gradient
from robeval.attacks.registry import attacks
from robeval.attacks.trace import new_run, record_step

Keep = Literal["best", "last"]
KEEPS: tuple[str, ...] = ("best", "last")


@attacks.register("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD:
    """Iterated gradient ascent on a loss, projected onto the eps-ball and [0, 1] (Madry et
    al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018, Eq. 2).

    ``x_{t+1} = Proj_{B(x, eps) ∩ [0,1]}( x_t + alpha * s(grad_x L(x_t)) )`` with
    ``s = sign`` for L-inf and ``g/||g||_2`` for L2, ``alpha = rel_stepsize * eps`` (or
    ``abs_stepsize`` when given). With ``random_start`` the first iterate is drawn
    uniformly from the eps-ball.

    ``keep`` -- which iterate is returned:

    * ``best`` (default): every step already runs the model forward on the current
      iterate ``x_t`` (to take its gradient); a point whose iterate is adversarial there
      (untargeted: ``argmax != y``; targeted: ``argmax == target``) keeps that iterate, the
      first adversarial on its path, and leaves the batch, so later steps cost nothing for
      it. Points never found adversarial get the last iterate. The robust accuracy is
      never higher than with ``last`` on the same path, and the passes are fewer.
    * ``last``: the last iterate ``x_T`` for every point, each point iterated all
      ``steps`` steps: foolbox 3.3.4's ``LinfPGD``/``L2PGD`` step for step (same step
      order and projection), so results agree with it for the same settings. An iterate
      that was adversarial midway may be left again (a *silent success*, visible in the
      path trace).

    ``loss`` -- the objective ascended (:mod:`robeval.attacks.losses`): ``ce`` (default,
    the cross-entropy of Madry et al.), ``margin`` (Carlini & Wagner, IEEE S&P 2017,
    Sec. V-A: ``max_{j!=y} z_j - z_y``) or ``dlr`` (Croce & Hein, ICML 2020, the
    Difference of Logits Ratio, scale-invariant in the logits; needs 3+ classes, 4+
    targeted). Targeted (``target`` given): the targeted version of the loss (``ce``:
    minus the target's cross-entropy, i.e. descend it; ``margin``: ``z_t - max_{j!=t}
    z_j``), and a point counts as found only when the model predicts the target.

    ``eot=K`` -- Expectation over Transformation (Athalye, Carlini & Wagner, "Obfuscated
    Gradients Give a False Sense of Security", ICML 2018, Sec. 4.3; Athalye et al., ICML
    2018): every step averages the input gradient over ``K`` forward/backward passes of a
    (possibly randomised) model, so a step costs ``K`` passes per point. With ``K > 1`` a
    point counts as found (``keep=best``, restarts) only when every one of the ``K``
    draws is adversarial: a point fooled by one random draw is not yet fooled.

    ``restarts=R`` runs the attack up to ``R`` times from fresh random starts; a sample
    fooled by one run (found along its path, or by its returned iterate) keeps that
    adversarial and is not attacked again (Madry et al. report the worst case over
    restarts). Random starts come from ``generator``; with a
    :class:`~robeval.attacks.rng.PointGenerator` every point has its own stream, so its
    starts and restarts do not depend on the other points of the call.

    While the runner traces the attack (:mod:`robeval.attacks.trace`), every step reports
    the rows still iterated, their loss (the objective above, at ``x_t``) and whether
    ``x_t`` was adversarial, and every run (restart) starts with ``new_run``; this reuses
    the step's own forward pass and costs nothing extra.

    Defaults: 10 steps of ``2.5 * eps / steps`` (Madry et al.'s rule), one run, ``keep=
    best``, ``loss=ce``, ``eot=1``. The papers' recipes: MNIST eps 0.3, 40 steps of 0.01
    (``steps=40,abs_stepsize=0.01``); CIFAR eps 8/255, 7 steps of 2/255 in training, 100
    for evaluation. ``keep=last`` reproduces foolbox and the papers' numbers exactly.
    """

    name: ClassVar[str] = "pgd"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = True
    nested: ClassVar[bool] = True
    norm: Norm = "linf"
    steps: int = 10
    rel_stepsize: float = 0.25
    abs_stepsize: float | None = None
    random_start: bool = True
    restarts: int = 1
    keep: Keep = "best"
    loss: Loss = "ce"
    eot: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.restarts < 1:
            raise ValueError("restarts must be >= 1")
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 repeat the same run without random_start; set random_start=true")
        if self.rel_stepsize <= 0 or (self.abs_stepsize is not None and self.abs_stepsize <= 0):
            raise ValueError("step sizes must be > 0")
        if self.keep not in KEEPS:
            raise ValueError(f"keep must be one of {', '.join(KEEPS)}; got {self.keep!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if isinstance(self.eot, bool) or not isinstance(self.eot, int) or self.eot < 1:
            raise ValueError(f"eot must be an integer >= 1; got {self.eot!r}")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        rows = torch.arange(len(x0), device=x0.device)
        best, found = self._run(model, x0, y, eps, generator, target, rows)
        for _ in range(self.restarts - 1):
            todo = (~found).nonzero().flatten()
            if len(todo):
                todo = todo[~self._fools(model, best[todo], y[todo], None if target is None else target[todo])]
            if len(todo) == 0:
                break
            retry, found_retry = self._run(  # each point's restart draws from its own stream
                model, x0[todo], y[todo], eps, rng.take(generator, todo), None if target is None else target[todo],
                rows[todo],
            )
            best[todo] = retry
            found[todo] = found_retry
        return best

    @torch.no_grad()
    def _fools(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Whether ``x`` is adversarial: by the arg-max of the logits (``eot=1``), or under
        every one of ``eot`` draws of a randomised model."""
        if self.eot == 1:
            return is_adversarial(model(x), y, target)
        fooled = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.eot):
            fooled &= is_adversarial(model(x), y, target)
        return fooled

    def _run(
        self, model: nn.Module, x0: Tensor, y: Tensor, eps: float,
        generator: torch.Generator | None, target: Tensor | None, rows: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One run of up to ``steps`` projected steps from a (random) start on the points
        ``rows`` of the call's input. Returns the kept iterates and, per point, whether one
        was found adversarial along the path (``keep=best``; always false with ``last``)."""
        new_run()
        alpha = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps
        if self.random_start:
            x_adv = (x0 + random_in_ball(x0, eps, self.norm, generator)).clamp_(0.0, 1.0)
        else:
            x_adv = x0.clone()
        found = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
        if self.keep == "last":  # every point walks every step: foolbox's loop
            for _ in range(self.steps):
                grad, value, scores = objective_gradient(
                    model, x_adv, y, loss=self.loss, target=target, eot=self.eot)
                record_step(rows, value, is_adversarial(scores, y, target))
                x_adv = x_adv + alpha * normalized_step(grad, self.norm)
                x_adv = (x0 + project(x_adv - x0, eps, self.norm)).clamp_(0.0, 1.0)
            return x_adv, found

        active = torch.arange(len(x0), device=x0.device)  # the points still iterated
        for _ in range(self.steps):
            xa, ya = x_adv[active], y[active]
            ta = None if target is None else target[active]
            grad, value, scores = objective_gradient(model, xa, ya, loss=self.loss, target=ta, eot=self.eot)
            adv = is_adversarial(scores, ya, ta)
            record_step(rows[active], value, adv)
            if bool(adv.any()):  # these keep x_t, their first adversarial, and leave
                found[active[adv]] = True
                go = ~adv
                active, xa, grad = active[go], xa[go], grad[go]
                if len(active) == 0:
                    break
            x0a = x0[active]
            xa = xa + alpha * normalized_step(grad, self.norm)
            x_adv[active] = (x0a + project(xa - x0a, eps, self.norm)).clamp_(0.0, 1.0)
        return x_adv, found
