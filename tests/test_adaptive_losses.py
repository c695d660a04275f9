"""The adaptive options of PGD and FGSM: the margin and DLR losses (closed forms, DLR's
scale invariance where the cross-entropy's gradient vanishes) and Expectation over
Transformation (the averaged gradient, its cost), plus their validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robeval
from robeval.attacks.base import perturbation_norms
from robeval.attacks.fgsm import FGSM
from robeval.attacks.losses import dlr, is_adversarial, margin, objective, objective_gradient
from robeval.attacks.pgd import PGD
from robeval.attacks.trace import tracing
from robeval.errors import RobevalError
from robeval.eval.counting import PassCounter
from tests.attack_checks import accuracy

# Two hand-made points of 4 classes: the first classified correctly (label 1), the second
# not (label 1, predicted 0); targets 3 and 2.
Z = torch.tensor([[2.0, 5.0, 1.0, 3.0], [4.0, 0.0, 1.0, -1.0]], dtype=torch.float64)
Y = torch.tensor([1, 1])
T = torch.tensor([3, 2])


def _lse(row: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in row))


def test_losses_match_their_closed_forms() -> None:
    # Cross-entropy (ascended untargeted, minus the target's CE targeted).
    ce_y = [_lse(Z[i].tolist()) - float(Z[i, Y[i]]) for i in range(2)]
    ce_t = [-(_lse(Z[i].tolist()) - float(Z[i, T[i]])) for i in range(2)]
    assert torch.allclose(objective("ce")(Z, Y, None), torch.tensor(ce_y, dtype=torch.float64))
    assert torch.allclose(objective("ce")(Z, Y, T), torch.tensor(ce_t, dtype=torch.float64))
    # C&W margin: max_{j!=y} z_j - z_y; targeted z_t - max_{j!=t} z_j.
    assert margin(Z, Y).tolist() == [3 - 5, 4 - 0]
    assert margin(Z, Y, T).tolist() == [3 - 5, 1 - 4]
    # DLR, sorted logits (5, 3, 2, 1) and (4, 1, 0, -1):
    # -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3); targeted -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).
    assert torch.allclose(dlr(Z, Y), torch.tensor([-(5 - 3) / (5 - 2), -(0 - 4) / (4 - 0)], dtype=torch.float64))
    assert torch.allclose(dlr(Z, Y, T), torch.tensor([-(5 - 3) / (5 - 1.5), -(0 - 1) / (4 + 0.5)],
                                                     dtype=torch.float64))
    # Positive exactly where the point is fooled (margin), and the adversarial criterion.
    assert is_adversarial(Z, Y).tolist() == [False, True]
    assert is_adversarial(Z, Y, T).tolist() == [False, False]


def test_dlr_is_shift_and_scale_invariant_and_needs_enough_classes() -> None:
    z = torch.randn(50, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randint(10, (50,), generator=torch.Generator().manual_seed(1))
    t = (y + 1) % 10
    for target in (None, t):
        base = dlr(z, y, target)
        assert torch.allclose(dlr(1000 * z + 7, y, target), base, atol=1e-9)
        assert torch.allclose(dlr(0.001 * z - 3, y, target), base, atol=1e-6)
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr(z[:, :2], y % 2)
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr(z[:, :3], y % 3, (y + 1) % 3)


class _Scaled(nn.Module):
    def __init__(self, base: nn.Module, factor: float) -> None:
        super().__init__()
        self.base, self.factor = base, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * self.base(x)


def test_dlr_gradient_survives_logit_scaling_where_ce_underflows() -> None:
    """Logits x1000 (float32): the softmax saturates, so CE's input gradient is exactly 0 on
    confident points, while DLR's gradient keeps its direction (Croce & Hein 2020, Sec. 4)."""
    torch.manual_seed(0)
    lin = nn.Linear(20, 6)
    with torch.no_grad():
        lin.weight.mul_(5)
    x = torch.rand(200, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z = lin(x)
    y = z.argmax(1)
    top2 = z.topk(2, dim=1).values
    confident = (top2[:, 0] - top2[:, 1]) > 0.2  # a gap of 200 after scaling: exp(-200) underflows
    assert int(confident.sum()) >= 20
    scaled = _Scaled(lin, 1000.0)
    ce_plain = objective_gradient(lin, x, y, loss="ce")[0][confident]
    ce_scaled = objective_gradient(scaled, x, y, loss="ce")[0][confident]
    assert bool((ce_plain.norm(dim=1) > 0).all())
    assert bool((ce_scaled == 0).all()), "CE's gradient underflows to exactly 0"
    for target in (None, (y + 1) % 6):
        g = objective_gradient(lin, x, y, loss="dlr", target=target)[0][confident]
        g_scaled = objective_gradient(scaled, x, y, loss="dlr", target=target)[0][confident]
        assert bool((g_scaled.norm(dim=1) > 0).all())
        assert float(F.cosine_similarity(g, g_scaled, dim=1).min()) > 0.9999
        assert float((g.sign() == g_scaled.sign()).float().mean()) > 0.999  # the L-inf step


def test_dlr_pgd_breaks_a_saturated_model_that_ce_pgd_cannot_move(digits_model, digits_test) -> None:
    """On the digits model with its logits x1000, CE-PGD (no random start) is stuck wherever the
    softmax saturates; DLR-PGD is not."""
    x, y = digits_test
    scaled = _Scaled(digits_model, 1000.0)
    attack = dict(steps=10, random_start=False, keep="last")
    acc_ce = accuracy(scaled, PGD(loss="ce", **attack)(scaled, x, y, eps=0.15), y)
    acc_dlr = accuracy(scaled, PGD(loss="dlr", **attack)(scaled, x, y, eps=0.15), y)
    assert acc_dlr < acc_ce - 0.2, (acc_ce, acc_dlr)


@pytest.mark.parametrize("loss", ["margin", "dlr"])
def test_pgd_and_fgsm_with_other_losses_attack_and_stay_in_budget(digits_model, digits_test, loss) -> None:
    x, y = digits_test
    clean = accuracy(digits_model, x, y)
    for norm, eps in (("linf", 0.15), ("l2", 1.0)):
        for attack in (PGD(norm=norm, loss=loss), FGSM(norm=norm, loss=loss)):
            x_adv = attack(digits_model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
            assert float(perturbation_norms(x_adv - x, norm).max()) <= eps * (1 + 1e-5)
            assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
            assert accuracy(digits_model, x_adv, y) < clean - 0.1, (attack, norm)
    target = (y + 1) % 10
    x_adv = PGD(loss=loss)(digits_model, x, y, eps=0.25, generator=torch.Generator().manual_seed(0), target=target)
    assert accuracy(digits_model, x_adv, target) > accuracy(digits_model, x, target) + 0.3


def test_fgsm_margin_is_one_signed_step_of_the_margin_gradient(digits_model, digits_test) -> None:
    x, y = digits_test
    xr = x.clone().requires_grad_(True)
    z = digits_model(xr)
    others = z.masked_fill(F.one_hot(y, 10).bool(), -torch.inf).amax(1)
    (grad,) = torch.autograd.grad((others - z.gather(1, y[:, None]).squeeze(1)).sum(), xr)
    expected = (x + 0.1 * grad.sign()).clamp(0, 1)
    assert torch.equal(FGSM(loss="margin")(digits_model, x, y, eps=0.1), expected)


# --- Expectation over Transformation ------------------------------------------------


class _Noisy(nn.Module):
    """A randomised model: Gaussian input noise drawn from the global RNG on every forward."""

    def __init__(self, base: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.base, self.sigma = base, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x + self.sigma * torch.randn_like(x))


def test_eot_gradient_is_the_mean_of_single_draws_and_closer_to_the_expectation(digits_model, digits_test) -> None:
    x, y = digits_test
    x, y = x[:64], y[:64]
    noisy = _Noisy(digits_model)
    for loss in ("ce", "dlr"):
        torch.manual_seed(7)
        grad, value, scores = objective_gradient(noisy, x, y, loss=loss, eot=4)
        torch.manual_seed(7)
        singles = [objective_gradient(noisy, x, y, loss=loss) for _ in range(4)]
        assert torch.allclose(grad, torch.stack([g for g, _, _ in singles]).mean(0), atol=1e-6)
        assert torch.allclose(value, torch.stack([v for _, v, _ in singles]).mean(0), atol=1e-6)
        # scores: per point the draw least favourable to the attacker (largest label margin)
        probs = torch.stack([s.softmax(1) for _, _, s in singles])
        others = probs.scatter(2, y[None, :, None].expand(4, -1, 1), float("-inf")).amax(2)
        margin = probs.gather(2, y[None, :, None].expand(4, -1, 1)).squeeze(2) - others
        assert torch.allclose(scores, probs[margin.argmax(0), torch.arange(len(y))], atol=1e-6)
        fooled_by_all = torch.stack([s.argmax(1) != y for _, _, s in singles]).all(0)
        assert torch.equal(is_adversarial(scores, y), fooled_by_all)

    x, y = x[:32], y[:32]
    torch.manual_seed(100)
    expected = objective_gradient(noisy, x, y, eot=64)[0]
    errors = {}
    for k in (1, 16):
        torch.manual_seed(k)
        errors[k] = float((objective_gradient(noisy, x, y, eot=k)[0] - expected).flatten(1).norm(dim=1).mean())
    assert errors[16] < 0.5 * errors[1], errors


def test_eot_pgd_costs_k_times_the_passes_and_steps_along_the_mean_gradient(digits_model, digits_test) -> None:
    x, y = digits_test
    x, y = x[:64], y[:64]
    noisy = _Noisy(digits_model)
    for k in (1, 4):
        counter = PassCounter(noisy)
        PGD(steps=3, eot=k, keep="last")(counter, x, y, eps=0.1, generator=torch.Generator().manual_seed(0))
        assert counter.counts.forward == counter.counts.backward == 3 * k * len(x)

    torch.manual_seed(3)
    x_adv = PGD(steps=1, eot=4, random_start=False, abs_stepsize=0.05, keep="last")(noisy, x, y, eps=0.1)
    torch.manual_seed(3)
    grad, _, _ = objective_gradient(noisy, x, y, eot=4)
    assert torch.equal(x_adv, (x + 0.05 * grad.sign()).clamp(0, 1))

    # keep=best: a point counts as found only when every one of the K draws is adversarial.
    torch.manual_seed(5)
    with tracing(len(x)) as trace:
        PGD(steps=2, eot=4, random_start=False)(noisy, x, y, eps=0.1)
    torch.manual_seed(5)
    _, _, scores = objective_gradient(noisy, x, y, eot=4)
    assert (trace.steps[0][2] == is_adversarial(scores, y).numpy()).all()


# --- validation and names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"keep": "first"}, "keep must be one of best, last"), ({"loss": "hinge"}, "loss must be one of ce, margin, dlr"),
     ({"eot": 0}, "eot must be an integer >= 1")],
)
def test_pgd_validates_its_new_parameters(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        PGD(**kwargs)


def test_bad_values_are_one_user_error_and_names_stay_canonical() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        FGSM(loss="hinge")
    for spec, fragment in (("pgd:eot=0", "eot must be"), ("pgd:keep=first", "must be one of"),
                           ("pgd:loss=hinge", "must be one of"), ("fgsm:loss=l1", "must be one of")):
        with pytest.raises(RobevalError, match=fragment):
            robeval.attacks.get(spec)
    assert robeval.attacks.canonical_name(robeval.attacks.get("pgd")) == "pgd"
    attack = robeval.attacks.get("pgd:keep=last,loss=dlr,eot=2")
    assert (attack.keep, attack.loss, attack.eot) == ("last", "dlr", 2)
    assert robeval.attacks.canonical_name(attack) == "pgd:eot=2,keep=last,loss=dlr"
