"""The runner's checks on what an attack returns. Attacks are not trusted: every
adversarial batch must keep its shape, be finite, lie in the [0, 1] box and inside the
eps-ball of the attack's norm (``linf``, ``l2``, ``l0``), or the whole result is refused.
A deformation must be the resampling of the input by the field it reports, and that
field must respect the bound (``norm = "field"``). For ``scale`` attacks (noise) eps is
no bound, so only the box is checked."""

from __future__ import annotations

import torch
from torch import Tensor

from robeval.attacks.base import (
    BALL_NORMS,
    Deformation,
    field_norms,
    perturbation_norms,
)
from robeval.errors import AttackContractError

BOX_TOL = 1e-6
BALL_RTOL = 1e-5
BALL_ATOL = 1e-6
DEFORM_ATOL = 1e-5


def attack_norms(x: Tensor, result: Tensor | Deformation, *, eps: float, norm: str, attack: str) -> tuple[Tensor, Tensor]:
    """Check one attack answer; return the adversarial images and each point's norm in the
    attack's own measure (the pixel norm, the field norm, or ``eps`` for scale attacks)."""
    if isinstance(result, Deformation):
        from robeval.attacks.adef import deform

        x_adv = result.x_adv
        check_adversarials(x, x_adv, eps=float("inf"), norm="linf", attack=attack)
        where = f"attack {attack!r} at eps={eps:g}"
        if result.field.shape != (x.shape[0], 2, *x.shape[2:]) or not result.field.isfinite().all():
            raise AttackContractError(f"{where} returned a malformed deformation field; results refused")
        if (deform(x, result.field) - x_adv).abs().max() > DEFORM_ATOL:
            raise AttackContractError(f"{where} returned images that are not the deformation it reports; results refused")
        norms = field_norms(result.field)
        if norm == "field":
            _check_ball(norms, eps, norm, where)
        elif norm in BALL_NORMS:
            norms = check_adversarials(x, x_adv, eps=eps, norm=norm, attack=attack)
        return x_adv, norms
    if norm in BALL_NORMS:
        return result, check_adversarials(x, result, eps=eps, norm=norm, attack=attack)
    check_adversarials(x, result, eps=float("inf"), norm="linf", attack=attack)
    return result, torch.full((x.shape[0],), float(eps), dtype=torch.float64)


def _check_ball(norms: Tensor, eps: float, norm: str, where: str) -> None:
    worst = float(norms.max()) if norms.numel() else 0.0
    if worst > eps * (1 + BALL_RTOL) + BALL_ATOL:
        raise AttackContractError(
            f"{where} exceeded its {norm} budget (largest perturbation {worst:.6g}); results refused"
        )


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
    _check_ball(norms, eps, norm, where)
    return norms
