"""The contract every registered attack must satisfy, as reusable checks.

Each check raises AssertionError with a reason. tests/test_attacks.py runs them on every
attack in the registry and shows, with deliberately broken attacks, that each one fails
when it should (a no-op attack must not pass as an attack).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robeval.attacks.base import (
    BALL_NORMS,
    Deformation,
    field_norms,
    perturbation_norms,
)

TOL = 1e-5


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run_attack(attack, model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int = 0) -> Tensor:
    """The adversarial images (a deformation attack's images without its field)."""
    result = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))
    return result.x_adv if isinstance(result, Deformation) else result


def size(attack, x: Tensor, result) -> Tensor:
    """Each point's size in the attack's measure (``scale`` attacks have none: zeros)."""
    if isinstance(result, Deformation):
        return field_norms(result.field) if attack.norm == "field" else perturbation_norms(result.x_adv - x, attack.norm)
    if attack.norm in BALL_NORMS:
        return perturbation_norms(result - x, attack.norm)
    return torch.zeros(len(x))


def check_budget_and_box(attack, model, x, y, eps: float) -> None:
    result = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    x_adv = result.x_adv if isinstance(result, Deformation) else result
    assert x_adv.shape == x.shape, "shape changed"
    assert torch.isfinite(x_adv).all(), "NaN or inf in adversarials"
    assert float(x_adv.min()) >= -TOL and float(x_adv.max()) <= 1 + TOL, "left the [0,1] box"
    worst = float(size(attack, x, result).max())
    assert worst <= eps * (1 + TOL) + TOL, f"{attack.norm} perturbation {worst} > eps {eps}"


def check_input_not_mutated(attack, model, x, y, eps: float) -> None:
    x_copy, y_copy = x.clone(), y.clone()
    run_attack(attack, model, x, y, eps)
    assert torch.equal(x, x_copy), "attack mutated its input images"
    assert torch.equal(y, y_copy), "attack mutated its labels"


def check_mode_unchanged(attack, model, x, y, eps: float) -> None:
    model.zero_grad(set_to_none=True)  # other libraries' attacks (foolbox) leave some behind
    for training in (False, True):
        model.train(training)
        state = [m.training for m in model.modules()]
        try:
            run_attack(attack, model, x[:8], y[:8], eps)
            assert [m.training for m in model.modules()] == state, "attack changed the model's mode"
        finally:
            model.eval()
    assert all(p.grad is None for p in model.parameters()), "attack left parameter gradients"


def check_deterministic(attack, model, x, y, eps: float) -> None:
    torch.manual_seed(1)  # the global RNG must not matter; the generator does
    first = run_attack(attack, model, x, y, eps, seed=123)
    torch.manual_seed(999)
    second = run_attack(attack, model, x, y, eps, seed=123)
    assert torch.equal(first, second), "same seed gave different adversarials"


def check_lowers_accuracy(attack, model, x, y, eps: float) -> None:
    clean = accuracy(model, x, y)
    robust = accuracy(model, run_attack(attack, model, x, y, eps), y)
    assert robust < clean - 0.05, f"accuracy not lowered: clean {clean:.3f}, attacked {robust:.3f}"


def check_monotone_in_eps(attack, model, x, y, grid: list[float]) -> None:
    accs = [accuracy(model, run_attack(attack, model, x, y, eps), y) for eps in grid]
    for (e0, a0), (e1, a1) in zip(zip(grid, accs), zip(grid[1:], accs[1:])):
        assert a1 <= a0, f"accuracy rose from {a0:.3f} at eps {e0} to {a1:.3f} at eps {e1}"


def check_targeted(attack, model, x, y, eps: float) -> None:
    """Targeted towards ``(y + 1) mod 10``: the target is hit clearly more often than clean,
    and the budget and box still hold."""
    target = (y + 1) % 10
    x_adv = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0), target=target)
    worst = float(size(attack, x, x_adv).max())
    assert worst <= eps * (1 + TOL) + TOL, f"{attack.norm} perturbation {worst} > eps {eps}"
    assert float(x_adv.min()) >= -TOL and float(x_adv.max()) <= 1 + TOL, "left the [0,1] box"
    with torch.no_grad():
        before = float((model(x).argmax(1) == target).float().mean())
        after = float((model(x_adv).argmax(1) == target).float().mean())
    assert after > before + 0.1, f"target hit rate {before:.3f} -> {after:.3f}"


ALL_CHECKS = (check_budget_and_box, check_input_not_mutated, check_mode_unchanged,
              check_deterministic, check_lowers_accuracy)
