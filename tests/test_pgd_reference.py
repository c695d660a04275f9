"""robeval's PGD against foolbox 3's LinfPGD / L2PGD on the same model, data and settings."""

from __future__ import annotations

import foolbox as fb
import pytest

import robeval
from tests.attack_checks import accuracy


@pytest.mark.parametrize(
    ("norm", "eps", "steps", "rel_stepsize"),
    [("linf", 0.05, 10, 0.25), ("linf", 0.1, 20, 0.1), ("l2", 0.5, 10, 0.25), ("l2", 1.0, 20, 0.1)],
)
def test_pgd_agrees_with_foolbox(digits_model, digits_test, norm, eps, steps, rel_stepsize) -> None:
    x, y = digits_test
    fmodel = fb.PyTorchModel(digits_model, bounds=(0, 1))
    cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
    reference = cls(steps=steps, rel_stepsize=rel_stepsize, random_start=False)
    _, clipped, _ = reference(fmodel, x, y, epsilons=eps)
    ours = robeval.attacks.get("pgd", norm=norm, steps=steps, rel_stepsize=rel_stepsize, random_start=False)
    x_adv = ours(digits_model, x, y, eps=eps)

    acc_ref, acc_ours = accuracy(digits_model, clipped, y), accuracy(digits_model, x_adv, y)
    clean = accuracy(digits_model, x, y)
    assert acc_ours < clean - 0.05, "the comparison point must be one where PGD does something"
    assert abs(acc_ours - acc_ref) <= 0.01, f"robeval {acc_ours:.4f} vs foolbox {acc_ref:.4f}"
    # Same algorithm, same order of operations: the iterates themselves agree closely.
    assert (x_adv - clipped).abs().max() < 1e-4
