"""Salt-and-pepper noise: agreement with foolbox 3 and the minimal-norm contract."""

from __future__ import annotations

import math

import foolbox as fb
import pytest
import torch
from torch import nn

import robeval
import robeval.attacks.saltpepper  # registers "salt-and-pepper"
from robeval.attacks.base import is_minimal, is_targeted, perturbation_norms
from robeval.attacks.saltpepper import SaltAndPepper
from robeval.errors import RobevalError
from tests import attack_checks as checks

STEPS = 100  # foolbox's default is 1000; fewer keep the test quick, for both sides alike


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def unbounded(digits_model, digits_test):
    """(ours, foolbox's raw advs, our advs at eps=inf), computed once."""
    x, y = digits_test
    ours = robeval.attacks.get("salt-and-pepper", steps=STEPS)
    torch.manual_seed(0)  # foolbox draws from the global RNG
    reference = fb.attacks.SaltAndPepperNoiseAttack(steps=STEPS)
    raw, _, _ = reference(fb.PyTorchModel(digits_model, bounds=(0, 1)), x, y, epsilons=None)
    digits_model.zero_grad(set_to_none=True)
    return ours, raw, ours(digits_model, x, y, generator=seeded(0))


# --- agreement with foolbox 3 ------------------------------------------------------


def test_agrees_with_foolbox(unbounded, digits_model, digits_test) -> None:
    _, raw, x_adv = unbounded
    x, y = digits_test
    clean = predictions(digits_model, x) == y
    ok_ref = clean & (predictions(digits_model, raw) != y)
    ok_ours = clean & (predictions(digits_model, x_adv) != y)
    rate_ref = float(ok_ref.sum() / clean.sum())
    rate_ours = float(ok_ours.sum() / clean.sum())
    assert abs(rate_ours - rate_ref) <= 0.03, f"success: ours {rate_ours:.3f} vs foolbox {rate_ref:.3f}"

    # Foolbox minimises L2, we the count (ties by L2): our counts are no larger in the
    # median, and the L2 norms stay close to foolbox's.
    both = ok_ref & ok_ours
    l0_ref, l0_ours = (float(perturbation_norms(a - x, "l0")[both].median()) for a in (raw, x_adv))
    l2_ref, l2_ours = (float(perturbation_norms(a - x, "l2")[both].median()) for a in (raw, x_adv))
    print(f"success {rate_ours:.3f} (foolbox {rate_ref:.3f}); median l0 {l0_ours} (foolbox {l0_ref});"
          f" median l2 {l2_ours:.3f} (foolbox {l2_ref:.3f})")
    assert l0_ours <= l0_ref + 1
    assert l2_ours <= 1.5 * l2_ref


# --- the minimal-norm contract ----------------------------------------------------


def test_unbounded_finds_most_and_returns_x_elsewhere(unbounded, digits_model, digits_test) -> None:
    _, _, x_adv = unbounded
    x, y = digits_test
    clean = predictions(digits_model, x) == y
    fooled = predictions(digits_model, x_adv) != y
    assert float((fooled & clean).sum()) >= 0.95 * float(clean.sum())
    unchanged = ~(fooled & clean)  # misclassified to begin with, or the search failed
    assert torch.equal(x_adv[unchanged], x[unchanged])


def test_changes_are_salt_or_pepper_and_l0_counts_them(unbounded, digits_test) -> None:
    _, _, x_adv = unbounded
    x, _ = digits_test
    changed = x_adv != x
    assert changed.any()
    assert ((x_adv[changed] == 0) | (x_adv[changed] == 1)).all()
    counts = changed.flatten(1).sum(1).to(x.dtype)
    assert torch.equal(perturbation_norms(x_adv - x, "l0"), counts)


def test_finite_eps_keeps_only_adversarials_inside_the_ball(digits_model, digits_test) -> None:
    x, y = digits_test
    x, y = x[:64], y[:64]
    ours = robeval.attacks.get("salt-and-pepper", steps=50)
    x_adv = ours(digits_model, x, y, generator=seeded(0))
    norms = perturbation_norms(x_adv - x, "l0")
    eps = float(norms[norms > 0].median())
    bounded = ours(digits_model, x, y, eps=eps, generator=seeded(0))
    inside = norms <= eps
    assert 0 < int(inside.sum()) < len(x)
    assert torch.equal(bounded[inside], x_adv[inside])
    assert torch.equal(bounded[~inside], x[~inside])
    assert float(perturbation_norms(bounded - x, "l0").max()) <= eps
    assert torch.equal(ours(digits_model, x, y, eps=0.0, generator=seeded(0)), x)


def test_seed_decides_the_result(digits_model, digits_test) -> None:
    x, y = digits_test
    x, y = x[:32], y[:32]
    attack = robeval.attacks.get("salt-and-pepper", steps=20)
    first = attack(digits_model, x, y, generator=seeded(1))
    torch.manual_seed(5)  # the global RNG does not matter
    assert torch.equal(first, attack(digits_model, x, y, generator=seeded(1)))
    assert not torch.equal(first, attack(digits_model, x, y, generator=seeded(2)))


@pytest.mark.parametrize(
    "check",
    [checks.check_budget_and_box, checks.check_input_not_mutated, checks.check_mode_unchanged,
     checks.check_deterministic, checks.check_lowers_accuracy],
    ids=lambda c: c.__name__,
)
@pytest.mark.parametrize(("spec", "eps"), [("salt-and-pepper:steps=30", 6.0),
                                           ("salt-and-pepper:steps=30,norm=l2", 2.0)])
def test_attack_contract(spec, eps, check, digits_model, digits_test) -> None:
    x, y = digits_test
    check(robeval.attacks.get(spec), digits_model, x[:32], y[:32], eps)


def test_noise_is_shared_across_channels() -> None:
    """With ``across_channels`` a pixel is salted or peppered in every channel at once."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.rand(16, 3, 4, 4, generator=gen) * 0.8 + 0.1  # no entry is already 0 or 1
    y = predictions(model, x)
    shared = robeval.attacks.get("salt-and-pepper", steps=50)(model, x, y, generator=seeded(0))
    changed = shared != x
    assert changed.any()
    assert (changed.all(1) | ~changed.any(1)).all()
    assert (shared.amax(1) == shared.amin(1))[changed.any(1)].all()
    free = robeval.attacks.get("salt-and-pepper", steps=50, across_channels=False)
    changed = free(model, x, y, generator=seeded(0)) != x
    assert (changed.any(1) & ~changed.all(1)).any()


def test_flags_defaults_and_name() -> None:
    attack = robeval.attacks.get("salt-and-pepper")
    assert is_minimal(attack) and not is_targeted(attack)
    assert (attack.norm, attack.steps, attack.across_channels, attack.channel_axis) == ("l0", 1000, True, 1)
    assert robeval.attacks.canonical_name(robeval.attacks.get("salt-and-pepper:norm=l2")) == (
        "salt-and-pepper:norm=l2")


def test_target_is_refused(digits_model, digits_test) -> None:
    x, y = digits_test
    with pytest.raises(ValueError, match="no targeted mode"):
        robeval.attacks.get("salt-and-pepper")(digits_model, x[:4], y[:4], eps=math.inf,
                                               target=(y[:4] + 1) % 10)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("salt-and-pepper:steps=0", "steps must be >= 1"), ("salt-and-pepper:norm=l1", "must be one of")],
)
def test_bad_parameters_are_one_clear_error(spec: str, fragment: str) -> None:
    with pytest.raises(RobevalError, match=fragment):
        robeval.attacks.get(spec)


def test_direct_construction_and_channel_axis_validate(digits_model, digits_test) -> None:
    with pytest.raises(ValueError, match="norm must be one of"):
        SaltAndPepper(norm="field")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be >= 1"):
        SaltAndPepper(steps=0)
    x, y = digits_test
    with pytest.raises(ValueError, match="batch axis"):
        SaltAndPepper(channel_axis=0)(digits_model, x[:4], y[:4])
