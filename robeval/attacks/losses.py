"""Per-point objectives that gradient attacks (PGD, FGSM) *ascend*, and the input gradient
of one, averaged over the model's randomness (EOT).

Every function takes logits ``z`` of shape ``(N, C)``, the labels ``y`` and optionally the
targets ``t``, and returns one value per point; an attack steps *up* its gradient, so the
targeted objectives carry their sign already (they rise as the model moves towards ``t``).

* ``ce`` -- the cross-entropy (Madry et al., "Towards Deep Learning Models Resistant to
  Adversarial Attacks", ICLR 2018, Eq. 2.1): ``CE(z, y)`` untargeted, ``-CE(z, t)``
  targeted (descending the target's cross-entropy, as foolbox 3 does).
* ``margin`` -- Carlini & Wagner's margin ("Towards Evaluating the Robustness of Neural
  Networks", IEEE S&P 2017, Sec. V-A, objective ``f_6`` without its clamp at ``-kappa``):
  ``max_{j != y} z_j - z_y`` untargeted, ``z_t - max_{j != t} z_j`` targeted. Positive
  exactly where the point is adversarial (up to ties).
* ``dlr`` -- the Difference of Logits Ratio of Croce & Hein ("Reliable Evaluation of
  Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks", ICML 2020,
  Sec. 4, Eq. (DLR) and its targeted version): with ``z_pi1 >= z_pi2 >= ...`` the sorted
  logits, ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` untargeted and
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` targeted. Invariant to shifting
  and (positive) scaling of the logits, so its gradient does not vanish on over-confident
  models where the cross-entropy's softmax saturates. Needs at least 3 classes (4
  targeted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Loss = Literal["ce", "margin", "dlr"]
LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")
DLR_EPS = 1e-12  # Croce & Hein's constant in the DLR denominator


def ce(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """``CE(z, y)`` (untargeted) or ``-CE(z, t)`` (targeted), per point (Madry et al. 2018)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _best_other(logits: Tensor, classes: Tensor) -> Tensor:
    """``max_{j != c} z_j`` per point."""
    mask = F.one_hot(classes, logits.shape[1]).bool()
    return logits.masked_fill(mask, -torch.inf).amax(dim=1)


def _own(logits: Tensor, classes: Tensor) -> Tensor:
    return logits.gather(1, classes.view(-1, 1)).squeeze(1)


def margin(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Carlini & Wagner's margin (S&P 2017, Sec. V-A, ``f_6``): ``max_{j != y} z_j - z_y``
    untargeted, ``z_t - max_{j != t} z_j`` targeted; positive where the point is fooled."""
    if target is None:
        return _best_other(logits, y) - _own(logits, y)
    return _own(logits, target) - _best_other(logits, target)


def dlr(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Croce & Hein's Difference of Logits Ratio (ICML 2020, Eq. (DLR) and targeted DLR):
    ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` untargeted,
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` targeted, ``z_pi`` the logits
    sorted in descending order. Shift- and scale-invariant in the logits."""
    classes = logits.shape[1]
    needed = 3 if target is None else 4
    if classes < needed:
        kind = "untargeted" if target is None else "targeted"
        raise ValueError(f"the {kind} DLR loss needs at least {needed} classes; the model has {classes}")
    z = logits.sort(dim=1, descending=True).values
    if target is None:
        return -(_own(logits, y) - _best_other(logits, y)) / (z[:, 0] - z[:, 2] + DLR_EPS)
    return -(_own(logits, y) - _own(logits, target)) / (z[:, 0] - (z[:, 2] + z[:, 3]) / 2 + DLR_EPS)


OBJECTIVES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "ce": ce, "margin": margin, "dlr": dlr,
}


def objective(name: str) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """The per-point objective called ``name`` (one of :data:`LOSSES`)."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {name!r}") from None


def objective_gradient(
    model: nn.Module, x: Tensor, y: Tensor, *, loss: str = "ce", target: Tensor | None = None,
    eot: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad, value, scores)`` at ``x``: the input gradient of the summed objective, the
    per-point objective and per-point class scores whose arg-max is the prediction.

    With ``eot = K > 1`` (Expectation over Transformation, Athalye et al., "Synthesizing
    Robust Adversarial Examples", ICML 2018, Eq. 1; Athalye, Carlini & Wagner, ICML 2018,
    Sec. 4.3) the model is run ``K`` times (one forward and one backward pass of ``x``
    each, drawing its randomness afresh) and ``grad`` and ``value`` are the means of the
    ``K`` draws; ``scores`` are, per point, the softmax output of the draw least favourable
    to the attacker (the largest ``p_y - max_{j!=y} p_j``, or the smallest ``p_t -
    max_{j!=t} p_j`` when targeted), so the point counts as adversarial only when every
    one of the ``K`` draws is: a randomised model that is fooled by one draw only is not
    yet fooled, and ``keep=best`` keeps iterating it. With ``eot = 1``
    ``scores`` are the logits and ``grad`` is exactly the gradient of one pass (for
    ``ce`` untargeted: :func:`robeval.attacks.base.loss_gradient`). Parameter gradients
    are neither computed nor stored."""
    fn = objective(loss)
    if eot < 1:
        raise ValueError(f"eot must be >= 1; got {eot}")
    grad_sum: Tensor | None = None
    value_sum: Tensor | None = None
    draws: list[Tensor] = []
    for _ in range(eot):
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            value = fn(logits, y, target)
            # A forward pass that cuts the graph gives no gradient: zero, as a naive attack
            # sees it (the unavailable-gradients indicator names the module).
            (grad,) = torch.autograd.grad(value.sum(), xr) if value.requires_grad else (torch.zeros_like(xr),)
        logits, value = logits.detach(), value.detach()
        if eot == 1:
            return grad, value, logits
        grad_sum = grad if grad_sum is None else grad_sum + grad
        value_sum = value if value_sum is None else value_sum + value
        draws.append(logits.softmax(dim=1))
    assert grad_sum is not None and value_sum is not None
    return grad_sum / eot, value_sum / eot, _least_adversarial(torch.stack(draws), y, target)


def _least_adversarial(probs: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per point, the draw of ``probs`` (draws x points x classes) that is least
    adversarial: the largest margin of the label over the rest (untargeted), or the
    smallest margin of the target over the rest (targeted)."""
    cls = (y if target is None else target)[None, :, None].expand(probs.shape[0], -1, 1)
    own = probs.gather(2, cls).squeeze(2)
    rest = probs.scatter(2, cls, float("-inf")).amax(2)
    margin = own - rest if target is None else rest - own
    pick = margin.argmax(0)
    return probs[pick, torch.arange(probs.shape[1], device=probs.device)]


def is_adversarial(scores: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Whether the arg-max of ``scores`` is not ``y`` (untargeted) or is ``t`` (targeted)."""
    pred = scores.argmax(dim=1)
    return pred != y if target is None else pred == target
