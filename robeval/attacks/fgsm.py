"""Fast gradient sign method (Goodfellow et al., ICLR 2015, Eq. 3) and the L2 fast
gradient method (Miyato et al. 2016; foolbox's ``FGM``), with Foolbox 2.4's line search
over eps as ``preset=foolbox2``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from robeval.attacks.base import Norm, normalized_step, restrict_to_ball
from robeval.attacks.losses import LOSSES, Loss, is_adversarial, objective_gradient
from robeval.attacks.presets import FOOLBOX2, Preset, mark_minimal, with_presets
from robeval.attacks.registry import attacks

#: Foolbox 2.4.0's defaults, ``foolbox/attacks/gradient.py``: ``GradientSignAttack.as_generator(a,
#: epsilons=1000, max_epsilon=1)`` (line 104; ``GradientAttack``, FGM's, alike at line 57).
FOOLBOX2_DEFAULTS = {"epsilons": 1000, "max_epsilon": 1.0}
#: The preset-only fields and their values under ``preset=robeval`` (left out of cache keys).
NEUTRAL = {"epsilons": None, "max_epsilon": None}
# Foolbox 2.4 gradient.py lines 32-45: a first success among the first 20 eps of the grid
# repeats the scan on 20 eps up to it (and a scan without success once more on 20 eps).
_REFINE_BELOW, _REFINE_STEPS = 20, 20


@attacks.register("fgsm")
@with_presets({FOOLBOX2: FOOLBOX2_DEFAULTS}, neutral=NEUTRAL)
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

    ``preset`` -- ``robeval`` (default: the one step above) or ``foolbox2``: Foolbox 2.4.0's
    ``GradientSignAttack`` (``FGSM``; with ``norm=l2`` its ``GradientAttack``), a minimal-
    norm line search. It scans ``eps_k = k * max_epsilon / epsilons``, k = 1..``epsilons``
    (defaults 1,000 and 1, Foolbox 2.4 ``attacks/gradient.py`` line 104) in the one
    direction ``s`` taken at ``x`` and stops at the first ``clip(x + eps_k s)`` the model
    misclassifies; when that is among the first 20, it scans 20 eps up to it once more
    (lines 39-45) and keeps the finer one if its mean squared distance is smaller (the
    bookkeeping of Foolbox 2's ``Adversarial``). ``s`` is ``sign(g)`` (L-inf) or ``g /
    (sqrt(mean(g^2)) + 1e-8)`` (L2, Foolbox's ``GradientAttack``, line 83). Points the
    model already misclassifies, and points no eps of the grid fools, come back as ``x``
    (a failed search, counted as robust, as smooth-kernels Table 1 does). The attack is
    then a minimal-norm search (this instance's ``minimal`` is true): with ``eps=inf``
    it returns the adversarial found, with a finite ``eps`` only where it lies in the
    eps-ball, and the runner reads every eps of a grid off one unbounded search.
    ``epsilons`` and ``max_epsilon`` are set by the preset and used by it only.
    """

    name: ClassVar[str] = "fgsm"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = True
    nested: ClassVar[bool] = True
    norm: Norm = "linf"
    loss: Loss = "ce"
    preset: Preset = "robeval"
    epsilons: int | None = None
    max_epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.preset != FOOLBOX2:
            if self.epsilons is not None or self.max_epsilon is not None:
                raise ValueError("epsilons and max_epsilon set Foolbox 2.4's line search: use them with preset=foolbox2")
        elif self.epsilons is None or self.max_epsilon is None:
            raise ValueError("preset=foolbox2 needs epsilons and max_epsilon (none given: the preset's 1000 and 1)")
        elif isinstance(self.epsilons, bool) or self.epsilons < 1 or not 0 < self.max_epsilon < float("inf"):
            raise ValueError(f"epsilons must be >= 1 and max_epsilon a finite number > 0; got {self.epsilons}, "
                             f"{self.max_epsilon}")
        mark_minimal(self, self.preset == FOOLBOX2)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        if eps == 0:
            return x.detach().clone()
        if self.preset == FOOLBOX2:
            x0 = x.detach()
            return restrict_to_ball(x0, self.line_search(model, x0, y, target), eps, self.norm)
        # Targeted objectives carry their sign (ce: -CE(x, target)), so this is the step
        # x - eps * s(grad CE(x, target)) exactly.
        grad, _, _ = objective_gradient(model, x, y, loss=self.loss, target=target)
        return (x.detach() + eps * normalized_step(grad, self.norm)).clamp(0.0, 1.0)

    def line_search(self, model: nn.Module, x0: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
        """Foolbox 2.4's search (``preset=foolbox2``): per point the adversarial found, or ``x0``."""
        assert self.epsilons is not None and self.max_epsilon is not None
        out = x0.clone()
        if len(x0) == 0:
            return out
        grad, _, scores = objective_gradient(model, x0, y, loss=self.loss, target=target)
        direction = foolbox2_direction(grad, self.norm)
        idx = (~is_adversarial(scores, y, target)).nonzero().flatten()  # Foolbox skips the rest
        if len(idx) == 0:
            return out
        xs, ds, ys = x0[idx], direction[idx], y[idx]
        ts = None if target is None else target[idx]
        grid = np.linspace(0, self.max_epsilon, num=self.epsilons + 1)[1:]
        first = _scan(model, xs, ds, ys, ts, np.broadcast_to(grid, (len(idx), len(grid))))
        found = first >= 0
        eps = np.where(found, grid[np.maximum(first, 0)], np.nan)
        # Second scan (gradient.py lines 44-45): up to the first success when it was among
        # the first 20; on the whole range again (to the last eps) when the scan failed.
        again = ~found | (first < _REFINE_BELOW)
        if again.any():
            tops = np.where(found, eps, grid[-1])[again]
            fine = np.stack([np.linspace(0, top, num=_REFINE_STEPS + 1)[1:] for top in tops])
            rows = torch.as_tensor(again.nonzero()[0])
            second = _scan(model, xs[rows], ds[rows], ys[rows], None if ts is None else ts[rows], fine)
            hit = second >= 0
            fine_eps = np.where(hit, fine[np.arange(len(fine)), np.maximum(second, 0)], np.nan)
            for row, new in zip(rows.tolist(), fine_eps.tolist()):
                if np.isnan(new):
                    continue
                if np.isnan(eps[row]) or _mse(xs[row], ds[row], new) < _mse(xs[row], ds[row], float(eps[row])):
                    eps[row] = new  # Foolbox keeps an adversarial only when strictly closer
        done = ~np.isnan(eps)
        if done.any():
            rows = torch.as_tensor(done.nonzero()[0])
            out[idx[rows]] = _step(xs[rows], ds[rows], eps[done])
        return out


@attacks.register("fgm")
@with_presets({FOOLBOX2: FOOLBOX2_DEFAULTS}, neutral=NEUTRAL)
@dataclass(frozen=True, kw_only=True)
class FGM(FGSM):
    """The L2 fast gradient method: ``x + eps * g / ||g||_2`` with ``g = grad_x CE(x, y)``,
    clipped to [0, 1] (FGM column of SGR Table 3; foolbox's ``L2FastGradientAttack``).
    ``fgm`` is ``fgsm:norm=l2`` under its usual name; ``preset=foolbox2`` is Foolbox
    2.4.0's ``GradientAttack`` line search (see ``fgsm``)."""

    name: ClassVar[str] = "fgm"
    nested: ClassVar[bool] = True
    norm: Norm = "l2"


def foolbox2_direction(grad: Tensor, norm: str) -> Tensor:
    """The step direction of Foolbox 2.4 (bounds (0, 1)): ``sign(g)`` for L-inf
    (``GradientSignAttack``, gradient.py line 130), ``g / (sqrt(mean(g^2)) + 1e-8)`` per
    point for L2 (``GradientAttack``, lines 83-84)."""
    if norm == "linf":
        return grad.sign()
    rms = grad.flatten(1).square().mean(dim=1).sqrt()
    return grad / (rms + 1e-8).view(-1, *([1] * (grad.dim() - 1)))


def _step(x0: Tensor, direction: Tensor, eps: np.ndarray) -> Tensor:
    """``clip(x0 + direction * eps, 0, 1)`` with each point's eps rounded to the input's
    dtype first, as numpy 1.x does for ``float32_array * float64_scalar``."""
    e = torch.as_tensor(np.asarray(eps, dtype=np.float64)).to(device=x0.device, dtype=x0.dtype)
    return (x0 + direction * e.view(-1, *([1] * (x0.dim() - 1)))).clamp(0.0, 1.0)


def _mse(x0: Tensor, direction: Tensor, eps: float) -> float:
    """Foolbox 2's default distance (mean squared error) of one point's step."""
    delta = _step(x0[None], direction[None], np.array([eps]))[0] - x0
    return float(delta.double().square().mean())


@torch.no_grad()
def _scan(model: nn.Module, x0: Tensor, direction: Tensor, y: Tensor, target: Tensor | None,
          grids: np.ndarray) -> np.ndarray:
    """Per point (row), the index of the first eps of its row of ``grids`` at which the
    step is adversarial, or -1. Points leave the batch at their first success."""
    first = np.full(len(x0), -1)
    active = torch.arange(len(x0))
    for k in range(grids.shape[1]):
        if len(active) == 0:
            break
        rows = active.numpy()
        xs = _step(x0[active], direction[active], grids[rows, k])
        adv = is_adversarial(model(xs), y[active], None if target is None else target[active]).cpu()
        first[rows[adv.numpy()]] = k
        active = active[~adv]
    return first
