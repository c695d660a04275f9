"""Projected gradient descent (Madry et al., ICLR 2018, Eq. 2), L-inf and L2, with
random restarts, a targeted mode, best-iterate selection, the margin and DLR losses,
Expectation over Transformation, and Foolbox 2.4's exponential-then-binary search over
eps (``preset=foolbox2``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks import rng
from robeval.attacks.base import Norm, normalized_step, project, random_in_ball, restrict_to_ball
from robeval.attacks.losses import LOSSES, Loss, is_adversarial, objective_gradient
from robeval.attacks.presets import FOOLBOX2, Preset, mark_minimal, with_presets
from robeval.attacks.registry import attacks
from robeval.attacks.trace import new_run, record_step

Keep = Literal["best", "last"]
KEEPS: tuple[str, ...] = ("best", "last")

#: Foolbox 2.4.0's ``ProjectedGradientDescentAttack.as_generator`` (``foolbox.attacks.PGD``),
#: ``foolbox/attacks/iterative_projected_gradient.py`` lines 701-710: ``binary_search=True``
#: (20 steps, line 69), ``epsilon=0.3``, ``stepsize=0.01`` (a ratio kept over the search,
#: line 115), ``iterations=40``, ``random_start=False``, ``return_early=True`` (= ``keep=best``).
FOOLBOX2_DEFAULTS = {"binary_search": 20, "initial_eps": 0.3, "abs_stepsize": 0.01, "steps": 40,
                     "random_start": False, "keep": "best"}
#: The preset-only fields and their values under ``preset=robeval`` (left out of cache keys).
NEUTRAL = {"binary_search": None, "initial_eps": None}
_GROWTH = 1.5  # iterative_projected_gradient.py line 140: a failed eps is multiplied by 1.5


@attacks.register("pgd")
@with_presets({FOOLBOX2: FOOLBOX2_DEFAULTS}, neutral=NEUTRAL)
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

    ``preset`` -- ``robeval`` (default: all of the above) or ``foolbox2``: Foolbox 2.4.0's
    ``ProjectedGradientDescentAttack`` (``foolbox.attacks.PGD``, L-inf only) with its
    defaults (``iterative_projected_gradient.py`` lines 701-710): 40 steps, no random
    start, each run stopped at its first adversarial iterate (``return_early``: ``keep=
    best``), and its search over eps (``binary_search``, lines 101-156): runs at
    ``initial_eps`` = 0.3, 0.45, ... (x1.5 after each failure, at most ``binary_search`` =
    20 runs; a point that none fools is a failed search), then ``binary_search`` runs
    bisecting between 0 and the first eps that succeeded, every run from ``x`` with the
    step ``abs_stepsize * eps / initial_eps`` (Foolbox's ``stepsize=0.01`` scaled with
    eps, line 115; with ``abs_stepsize=none`` the step is ``rel_stepsize * eps``). Foolbox checks a
    run's iterate after each step, and its ``Adversarial`` keeps the adversarial of
    smallest mean squared distance seen in any run; so does this search. It is then a
    minimal-norm search (this instance's ``minimal`` is true): with ``eps=inf`` it returns
    that adversarial, or ``x`` where the search failed or the model already errs (counted
    as robust, as smooth-kernels Table 1 does), and with a finite ``eps`` the adversarial
    only where it lies in the eps-ball; the runner reads every eps of a grid off one
    unbounded search. ``binary_search=none`` is Foolbox's ``binary_search=False``: one run
    at the call's (finite) eps with steps of ``abs_stepsize`` (or ``rel_stepsize * eps``),
    a budgeted attack. ``keep=last`` is ``return_early=False``
    (every run walks all its steps and keeps its closest adversarial iterate).
    ``binary_search`` and ``initial_eps`` are used by the preset only.
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
    preset: Preset = "robeval"
    binary_search: int | None = None
    initial_eps: float | None = None

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
        if self.preset == FOOLBOX2:
            self._check_foolbox2()
        elif self.binary_search is not None or self.initial_eps is not None:
            raise ValueError("binary_search and initial_eps set Foolbox 2.4's search over eps: use them with "
                             "preset=foolbox2")
        mark_minimal(self, self.preset == FOOLBOX2 and self.binary_search is not None)

    def _check_foolbox2(self) -> None:
        if self.norm != "linf":
            raise ValueError("preset=foolbox2 is Foolbox 2.4's L-inf PGD (ProjectedGradientDescentAttack); use "
                             "norm=linf, or preset=robeval for L2")
        if self.restarts != 1:
            raise ValueError("preset=foolbox2 has no restarts (Foolbox 2.4's search reruns from x itself); "
                             "use restarts=1")
        if self.binary_search is not None:
            if isinstance(self.binary_search, bool) or self.binary_search < 1:
                raise ValueError(f"binary_search must be an integer >= 1 or none; got {self.binary_search!r}")
            if self.initial_eps is None or not 0 < self.initial_eps < math.inf:
                raise ValueError(f"initial_eps must be a finite number > 0; got {self.initial_eps!r}")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        if self.preset == FOOLBOX2:
            return self._foolbox2(model, x0, y, eps, generator, target)
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

    # --- preset=foolbox2: Foolbox 2.4's ProjectedGradientDescentAttack --------------------

    def _foolbox2(self, model: nn.Module, x0: Tensor, y: Tensor, eps: float,
                  generator: torch.Generator | None, target: Tensor | None) -> Tensor:
        """Foolbox 2.4's search (or, with ``binary_search=none``, its one run at ``eps``):
        per point the closest adversarial found (mean squared distance), else ``x0``."""
        out = x0.clone()
        with torch.no_grad():  # Foolbox attacks no point the model already misclassifies
            idx = (~is_adversarial(model(x0), y, target)).nonzero().flatten()
        if len(idx) == 0:
            return out
        xs, ys = x0[idx], y[idx]
        ts = None if target is None else target[idx]
        gen = rng.take(generator, idx)
        if self.binary_search is None:
            if math.isinf(eps):
                raise ValueError("pgd:preset=foolbox2,binary_search=none runs at a given eps; give a finite eps")
            eps_ = torch.full((len(idx),), float(eps), dtype=torch.float64)
            _, out[idx], _ = self._foolbox2_run(model, xs, ys, eps_, gen, ts, idx)
            return out
        out[idx] = self.foolbox2_search(model, xs, ys, gen, ts, idx)
        return restrict_to_ball(x0, out, eps, self.norm)

    def foolbox2_search(self, model: nn.Module, x0: Tensor, y: Tensor, generator: torch.Generator | None,
                        target: Tensor | None, rows: Tensor) -> Tensor:
        """``_run_binary_search`` of Foolbox 2.4 (iterative_projected_gradient.py lines
        101-156) for every point at once: each point has its own eps, phase (exponential,
        then bisection) and count of runs; every round runs each unfinished point once."""
        assert self.binary_search is not None and self.initial_eps is not None
        n, k = len(x0), self.binary_search
        eps = torch.full((n,), self.initial_eps, dtype=torch.float64)
        good, bad = torch.full((n,), math.nan, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        phase = torch.zeros(n, dtype=torch.long)  # 0: growing eps, 1: bisecting, 2: done
        runs = torch.zeros(n, dtype=torch.long)
        best, best_d = x0.clone(), torch.full((n,), math.inf, dtype=torch.float64)
        while bool((phase < 2).any()):
            act = (phase < 2).nonzero().flatten()
            ok, adv, dist = self._foolbox2_run(
                model, x0[act], y[act], eps[act], rng.take(generator, act),
                None if target is None else target[act], rows[act])
            closer = dist < best_d[act]  # Foolbox's Adversarial: only a strictly closer one replaces
            best[act[closer]], best_d[act[closer]] = adv[closer], dist[closer]
            e, grow = eps[act], phase[act] == 0
            found = grow & ok  # the exponential search succeeded: bisect between 0 and this eps
            good[act] = torch.where(found, e, torch.where(~grow & ok, e, good[act]))
            bad[act] = torch.where(found, 0.0, torch.where(~grow & ~ok, e, bad[act]))
            runs[act] = torch.where(found, 0, runs[act] + 1)
            phase[act] = torch.where(found, 1, torch.where(runs[act] >= k, 2, phase[act]))
            eps[act] = torch.where(grow & ~ok, e * _GROWTH, (good[act] + bad[act]) / 2)
        return best

    def _foolbox2_ratio(self) -> float:
        """Step over eps: Foolbox's ``factor = stepsize / epsilon`` (line 115), or ``rel_stepsize``."""
        if self.abs_stepsize is not None and self.initial_eps is not None:
            return self.abs_stepsize / self.initial_eps
        return self.rel_stepsize

    def _foolbox2_run(self, model: nn.Module, x0: Tensor, y: Tensor, eps: Tensor,
                      generator: torch.Generator | None, target: Tensor | None, rows: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """Foolbox 2.4's ``_run_one`` (lines 158-220) with each point's own ``eps``: steps
        of ``alpha * sign(g)``, projected onto the eps-ball and [0, 1], the iterate checked
        after each step. Returns per point whether an iterate was adversarial, the closest
        adversarial iterate (``x0`` where none) and its mean squared distance (inf)."""
        new_run()
        view = (-1, *([1] * (x0.dim() - 1)))
        alpha64 = eps * self._foolbox2_ratio() if self.abs_stepsize is None or self.binary_search is not None \
            else torch.full_like(eps, self.abs_stepsize)
        e, alpha = eps.to(x0.dtype).to(x0.device).view(view), alpha64.to(x0.dtype).to(x0.device).view(view)
        x = x0 + random_in_ball(x0, 1.0, "linf", generator) * e if self.random_start else x0.clone()
        found = torch.zeros(len(x0), dtype=torch.bool)
        best, best_d = x0.clone(), torch.full((len(x0),), math.inf, dtype=torch.float64)
        active = torch.arange(len(x0))
        for step in range(self.steps + 1):
            ya, ta = y[active], None if target is None else target[active]
            if step < self.steps:
                grad, value, scores = objective_gradient(model, x[active], ya, loss=self.loss, target=ta, eot=self.eot)
            else:
                with torch.no_grad():
                    scores = model(x[active])
            adv = is_adversarial(scores, ya, ta).cpu()
            if step < self.steps:
                record_step(rows[active], value, adv)
            if step > 0 and bool(adv.any()):  # the iterate after `step` steps (Foolbox's forward_one)
                hit = active[adv]
                dist = (x[hit] - x0[hit]).flatten(1).double().square().mean(dim=1).cpu()
                closer = dist < best_d[hit]
                best[hit[closer]], best_d[hit[closer]] = x[hit[closer]], dist[closer]
                found[hit] = True
                if step == self.steps:
                    break
                if self.keep == "best":  # return_early: this run ends for them
                    active, grad = active[~adv], grad[~adv]
            if step == self.steps or len(active) == 0:
                break
            xa, x0a = x[active] + alpha[active] * grad.sign(), x0[active]
            x[active] = (x0a + torch.clamp(xa - x0a, -e[active], e[active])).clamp(0.0, 1.0)
        return found, best, best_d
