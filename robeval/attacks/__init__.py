"""The attack battery. ``robeval.attacks.get("pgd:norm=l2,steps=40")`` returns a callable
``attack(model, x, y, *, eps, generator=None, target=None) -> x_adv``; ``robeval ls
attacks`` lists them. Budgeted and minimal-norm attacks: see :mod:`robeval.attacks.base`.
"""

from robeval.attacks import (  # noqa: F401  (registers)
    adef,
    alma,
    apgd,
    autoattack,
    cw,
    ddn,
    deepfool,
    ensemble,
    fgsm,
    fmn,
    fourier,
    lrc_data,
    noise,
    pgd,
    saltpepper,
)
from robeval.attacks.base import Attack, Norm, perturbation_norms
from robeval.attacks.registry import attacks, canonical_name, get

__all__ = ["Attack", "Norm", "attacks", "canonical_name", "get", "perturbation_norms"]
