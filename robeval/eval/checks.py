"""The runner's checks on what an attack returns. Attacks are not trusted: every
adversarial batch must keep its shape, be finite, lie in the [0, 1] box and inside the
eps-ball of the attack's norm, or the whole result is refused."""

from __future__ import annotations

from torch import Tensor

from robeval.attacks.base import perturbation_norms
from robeval.errors import AttackContractError

BOX_TOL = 1e-6
BALL_RTOL = 1e-5
BALL_ATOL = 1e-6


def check_adversarials(x: Tensor, x_adv: Tensor, *, eps: float, norm: str, attack: str) -> Tensor:
    """Raise :class:`AttackContractError` unless ``x_adv`` is a valid answer; return the
    per-sample perturbation norms ``||x_adv - x||`` (in ``norm``)."""
    where = f"attack {attack!r} at eps={eps:g}"
    if x_adv.shape != x.shape:
        raise AttackContractError(
            f"{where} returned shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}"
        )
    if not x_adv.isfinite().all():
        raise AttackContractError(f"{where} returned NaN or inf values; results refused")
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < -BOX_TOL or high > 1 + BOX_TOL:
        raise AttackContractError(
            f"{where} left the [0, 1] image box (min {low:.6g}, max {high:.6g}); results refused"
        )
    norms = perturbation_norms(x_adv.detach() - x.detach(), norm)
    worst = float(norms.max()) if norms.numel() else 0.0
    if worst > eps * (1 + BALL_RTOL) + BALL_ATOL:
        raise AttackContractError(
            f"{where} exceeded its {norm} budget (largest perturbation {worst:.6g}); results refused"
        )
    return norms
