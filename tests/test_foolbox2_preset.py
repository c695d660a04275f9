"""``preset=foolbox2``: Foolbox 2.4.0's defaults and searches (robeval.attacks.presets).

The values are checked against a table read off Foolbox 2.4.0's source (each entry cites
its file and line); FGSM's line search against a brute-force transcription of Foolbox's
loop; DeepFool's and PGD's searches against closed forms on linear models; and every
``foolbox2`` variant against the attack contract of tests/attack_checks.py.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import robeval
from robeval.attacks import attacks
from robeval.attacks.base import is_minimal
from robeval.attacks.presets import non_preset_params, stable_params
from robeval.configs import non_default_params
from robeval.errors import RobevalError
from robeval.params import format_named
from tests import attack_checks as checks

# Foolbox 2.4.0 (git tag v2.4.0), foolbox/attacks/...
FOOLBOX24 = {
    "fgsm": {
        "epsilons": 1000,  # gradient.py:104  GradientSignAttack.as_generator(a, epsilons=1000, ...)
        "max_epsilon": 1.0,  # gradient.py:104  ... max_epsilon=1)
    },
    "fgm": {
        "epsilons": 1000,  # gradient.py:57  GradientAttack.as_generator(a, epsilons=1000, ...)
        "max_epsilon": 1.0,  # gradient.py:57  ... max_epsilon=1)
    },
    "pgd": {  # iterative_projected_gradient.py: ProjectedGradientDescentAttack.as_generator
        "binary_search": 20,  # :704 binary_search=True, and :69 k = 20 for True
        "initial_eps": 0.3,  # :705 epsilon=0.3
        "abs_stepsize": 0.01,  # :706 stepsize=0.01 (scaled with eps in the search, :115 and :118)
        "steps": 40,  # :707 iterations=40
        "random_start": False,  # :708 random_start=False
        "keep": "best",  # :709 return_early=True
    },
    "deepfool": {
        "steps": 100,  # deepfool.py:27  as_generator(a, steps=100, ...)
        "candidates": 10,  # deepfool.py:27  subsample=10 (top 10 classes, :90-95)
        "loss": "crossentropy",  # deepfool.py:114-137  differences of -crossentropy
        "overshoot": 0.05,  # deepfool.py:164  perturbed + 1.05 * perturbation
    },
    "cw": {  # carlini_wagner.py: CarliniWagnerL2Attack.as_generator
        "binary_search_steps": 5,  # :29
        "steps": 1000,  # :30 max_iterations=1000
        "confidence": 0.0,  # :31
        "stepsize": 5e-3,  # :32 learning_rate=5e-3
        "initial_const": 1e-2,  # :33
        "abort_early": True,  # :34
    },
    "salt-and-pepper": {
        "steps": 100,  # saltandpepper.py:14  as_generator(a, epsilons=100, ...)
        "repetitions": 10,  # saltandpepper.py:14  repetitions=10
    },
    "adef": {
        "max_iter": 100,  # adef_attack.py:185  as_generator(a, max_iter=100, ...)
        "sigma": 1.0,  # adef_attack.py:185  smooth=1.0
        "candidates": 10,  # adef_attack.py:185 subsample=10; :244 np.arange(1, subsample) + the clean class
        "overshoot": 1.0,  # adef_attack.py has no overshoot
    },
}

# Cheaper explicit settings for the contract (an explicit parameter wins; same code paths).
CHEAP = {"fgsm": {"epsilons": 250}, "fgm": {"epsilons": 250}, "pgd": {"binary_search": 4, "steps": 10},
         "deepfool": {"steps": 30}, "cw": {"steps": 40, "binary_search_steps": 2}, "salt-and-pepper": {"repetitions": 1},
         "adef": {"max_iter": 20}}
VARIANTS = ["fgsm", "fgm", "pgd", "pgd:binary_search=none,steps=40", "deepfool", "deepfool:norm=linf", "cw",
            "salt-and-pepper", "adef"]
EPS = {"linf": 0.25, "l2": 2.0, "l0": 12.0, "field": 1.5}


def foolbox2(variant: str):
    """The ``foolbox2`` variant with CHEAP settings for what the variant does not set."""
    name, _, rest = variant.partition(":")
    spec = f"{name}:preset=foolbox2" + (f",{rest}" if rest else "")
    return robeval.attacks.get(spec, **{k: v for k, v in CHEAP.get(name, {}).items() if f"{k}=" not in rest})


@pytest.mark.parametrize("name", sorted(FOOLBOX24))
def test_preset_sets_exactly_foolbox_24s_values(name: str) -> None:
    attack = robeval.attacks.get(f"{name}:preset=foolbox2")
    default = robeval.attacks.get(name)
    changed = {f.name for f in dataclasses.fields(attack) if getattr(attack, f.name) != getattr(default, f.name)}
    assert changed - {"preset"} <= set(FOOLBOX24[name]), changed
    assert {k: getattr(attack, k) for k in FOOLBOX24[name]} == FOOLBOX24[name]
    assert non_preset_params(attack) == {"preset": "foolbox2"}


def test_explicit_parameters_override_the_preset() -> None:
    pgd = robeval.attacks.get("pgd:preset=foolbox2,steps=10")
    assert (pgd.steps, pgd.binary_search, pgd.abs_stepsize, pgd.random_start) == (10, 20, 0.01, False)
    assert robeval.attacks.get("cw:preset=foolbox2", stepsize=0.1).stepsize == 0.1
    direct = type(pgd)(preset="foolbox2", steps=10)
    assert direct == pgd and dataclasses.replace(pgd, keep="last").steps == 10
    assert non_preset_params(pgd) == {"preset": "foolbox2", "steps": 10}
    # the name relative to the preset round-trips, steps=10 (robeval's default) included
    assert robeval.attacks.get(format_named("pgd", non_preset_params(pgd))) == pgd
    one_run = robeval.attacks.get("pgd:preset=foolbox2,binary_search=none")
    assert robeval.attacks.get(format_named("pgd", non_preset_params(one_run))) == one_run


@pytest.mark.parametrize("spec", ["pgd", "pgd:norm=l2,steps=40", "cw:steps=200", "salt-and-pepper:norm=l2",
                                  "adef:candidates=10", "fgm", "deepfool:norm=linf,overshoot=0.05"])
def test_names_relative_to_the_preset_are_the_canonical_names_without_one(spec: str) -> None:
    attack = robeval.attacks.get(spec)
    assert non_preset_params(attack) == non_default_params(attack)


def test_default_preset_is_unchanged() -> None:
    for name in FOOLBOX24:
        attack = robeval.attacks.get(name)
        assert attack.preset == "robeval" and robeval.attacks.canonical_name(attack) == name
        # the fields added for presets stay out of a default run's cache key
        assert not {"preset", "epsilons", "max_epsilon", "binary_search", "initial_eps", "repetitions"} & set(
            stable_params(attack))
    assert not is_minimal(robeval.attacks.get("fgsm")) and not is_minimal(robeval.attacks.get("pgd"))


@pytest.mark.parametrize("spec", ["pgd:preset=foolbox3", "cw:preset=Foolbox"])
def test_unknown_preset_is_one_line_naming_the_choices(spec: str) -> None:
    with pytest.raises(RobevalError) as err:
        robeval.attacks.get(spec)
    assert "robeval" in str(err.value) and "foolbox2" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RobevalError, match="robeval, foolbox2"):
        type(robeval.attacks.get("pgd"))(preset="foolbox3")


@pytest.mark.parametrize("spec", ["pgd:preset=foolbox2,norm=l2", "cw:preset=foolbox2,norm=linf",
                                  "pgd:binary_search=5", "fgsm:epsilons=10"])
def test_settings_foolbox_24_did_not_have_are_refused(spec: str) -> None:
    with pytest.raises(RobevalError):
        robeval.attacks.get(spec)


def test_listing_names_the_preset() -> None:
    from robeval.listing import entry

    pgd = entry("attacks", "pgd")
    assert any(p.name == "preset" and p.default == "robeval" and p.kind == "robeval|foolbox2" for p in pgd.params)
    assert any("Foolbox 2.4" in paragraph for paragraph in pgd.details)


def test_searches_are_minimal_norm_attacks_for_the_runner() -> None:
    from robeval.eval.runner import attack_cells

    for spec, minimal in [("fgsm:preset=foolbox2", True), ("pgd:preset=foolbox2", True),
                          ("pgd:preset=foolbox2,binary_search=none", False), ("fgsm", False)]:
        assert is_minimal(robeval.attacks.get(spec)) is minimal
        _, cells = attack_cells(model="m", identity="i", dataset="digits", attack_spec=spec,
                                eps_grid=(0.1, math.inf), n=4, seed=0, batch_size=4)
        assert any(c.unbounded for c in cells) is minimal


# --- the searches --------------------------------------------------------------------


def tiny_linear(seed: int = 0, classes: int = 3, size: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(size, classes))
    return model.eval()


def fgsm_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Foolbox 2.4 gradient.py lines 17-45 (with its Adversarial's rule: keep an
    adversarial only when strictly closer in mean squared error), one point at a time."""
    out = x.clone()
    for i in range(len(x)):
        xi, yi = x[i:i + 1], y[i:i + 1]
        if model(xi).argmax(1) != yi:
            continue  # base.py line 70: a misclassified input is not attacked
        xr = xi.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xr), yi), xr)
        g = g.sign()
        epsilons, decrease_if_first = np.linspace(0, 1, num=1000 + 1)[1:], True
        best, best_mse, done = None, math.inf, False
        for _ in range(2):
            for k, epsilon in enumerate(epsilons):
                perturbed = (xi + g * torch.tensor(epsilon, dtype=torch.float32)).clamp(0, 1)
                if model(perturbed).argmax(1) != yi:
                    mse = float((perturbed - xi).double().square().mean())
                    if mse < best_mse:
                        best, best_mse = perturbed, mse
                    if decrease_if_first and k < 20:
                        break
                    done = True
                    break
            if done:
                break
            epsilons = np.linspace(0, epsilons[k], num=20 + 1)[1:]
        if best is not None:
            out[i] = best[0]
    return out


@torch.no_grad()
def test_fgsm_line_search_is_foolbox_24s() -> None:
    model = tiny_linear()
    model[1].bias[:] = -model[1].weight.sum(1) * 0.5  # the classes meet at x = 0.5: points near it need small eps
    x = (0.5 + 0.1 * torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 3  # three points the model already gets wrong: returned as they are
    with torch.enable_grad():
        ours = robeval.attacks.get("fgsm:preset=foolbox2")(model, x, y, eps=math.inf)
        reference = fgsm_reference(model, x, y)
    assert torch.equal(ours, reference)
    sizes = (ours - x).flatten(1).abs().amax(1)
    fooled = model(ours).argmax(1) != y
    # the cases covered: refined (first hit below 0.02), plain grid hits, and unchanged points
    assert bool(((sizes > 0) & (sizes < 0.02)).any()) and bool((sizes >= 0.02).any()) and bool((sizes == 0).any())
    assert bool(fooled[sizes > 0].all())


def test_deepfool_takes_foolbox_24s_step_on_an_affine_model() -> None:
    """One step of |f| / ||w||^2 * w with the overshoot 1.05 crosses a linear boundary:
    the returned L2 size is 1.05 * distance (no 1e-4 term, deepfool.py lines 154/164)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double().eval()
    x = (0.5 + 0.01 * torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))).double()
    with torch.no_grad():
        y = model(x).argmax(1)
        z = model(x)
    w = model[1].weight
    w_diff = (w[1 - y] - w[y]).norm(dim=1)
    distance = (z[torch.arange(6), y] - z[torch.arange(6), 1 - y]).abs() / w_diff
    adv = robeval.attacks.get("deepfool:preset=foolbox2")(model, x, y, eps=math.inf)
    assert torch.allclose((adv - x).flatten(1).norm(dim=1), 1.05 * distance, rtol=1e-7)
    default = robeval.attacks.get("deepfool")(model, x, y, eps=math.inf)  # foolbox 3: (1.02)(d + 1e-4)
    assert torch.allclose((default - x).flatten(1).norm(dim=1), 1.02 * (distance + 1e-4), rtol=1e-7)


def test_pgd_search_brackets_the_minimal_eps_on_a_linear_model() -> None:
    """Two classes, a linear model: a run at eps fools the point iff eps > d = |f| /
    ||w_1 - w_0||_1 (40 steps of eps/30 reach the corner of the eps-ball), so the closest
    adversarial the search meets lies within the bisection's resolution (0.3 / 2^20)
    above d; a point no eps fools comes back unchanged."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double().eval()
    with torch.no_grad():
        model[1].bias[:] = torch.tensor([0.0, 0.0], dtype=torch.float64)
    x = (0.5 + 0.02 * torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(2))).double()
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = model[1].weight
    d = (z[:, 0] - z[:, 1]).abs() / (w[1] - w[0]).abs().sum()
    adv = robeval.attacks.get("pgd:preset=foolbox2")(model, x, y, eps=math.inf)
    size = (adv - x).flatten(1).abs().amax(1)
    assert bool((size >= d * (1 - 1e-9)).all()) and bool((size <= d + 1e-5).all()), (size, d)
    huge = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double().eval()
    with torch.no_grad():
        huge[1].weight.zero_()
        huge[1].bias[:] = torch.tensor([10.0, 0.0], dtype=torch.float64)
    same = robeval.attacks.get("pgd:preset=foolbox2,binary_search=3")(huge, x, torch.zeros(5, dtype=torch.long),
                                                                      eps=math.inf)
    assert torch.equal(same, x)  # the exponential search failed: a point counted as robust


@torch.no_grad()
def test_salt_and_pepper_failure_counts_as_robust() -> None:
    """Points salt and pepper cannot fool come back unchanged and stay classified
    correctly (smooth-kernels Table 1 counts the failed search as robust); the others
    are fooled."""

    class GreyPixel(nn.Module):  # class 1 iff some pixel is grey (0.3): noise of 0s and 1s adds none
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grey = ((x.flatten(1) - 0.3).abs() < 1e-3).any(1).float()
            return torch.stack([torch.full_like(grey, 0.5), grey], dim=1)

    model = GreyPixel()
    x = torch.zeros(4, 1, 6, 6)
    x[2:, 0, 3, 3] = 0.3
    y = model(x).argmax(1)
    assert y.tolist() == [0, 0, 1, 1]
    adv = robeval.attacks.get("salt-and-pepper:preset=foolbox2")(
        model, x, y, eps=math.inf, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adv[:2], x[:2]) and torch.equal(model(adv[:2]).argmax(1), y[:2])  # failed: robust
    assert bool((model(adv[2:]).argmax(1) != y[2:]).all())


def test_cw_aborts_per_sample() -> None:
    """Foolbox 2 attacked one sample at a time: a sample's result does not depend on the
    others in its batch. Foolbox 3's rule (the default preset's) looks at the batch's total
    loss, and here it does."""
    model = tiny_linear(0).double()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)).double()
    y = model(x).argmax(1)
    settings = "steps=100,binary_search_steps=2,initial_const=1,stepsize=0.01"
    for spec, invariant in [(f"cw:preset=foolbox2,{settings}", True), (f"cw:{settings}", False)]:
        attack = robeval.attacks.get(spec)
        together = attack(model, x, y)
        alone = torch.cat([attack(model, x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
        assert bool((together != x).any()), "no adversarial found: the example tests nothing"
        assert torch.allclose(together, alone, atol=1e-9) is invariant, spec


# --- the attack contract, for every foolbox2 variant ----------------------------------


@pytest.fixture(scope="module")
def points(digits_test):
    x, y = digits_test
    return x[:16], y[:16]


@pytest.mark.parametrize("variant", VARIANTS)
def test_contract(variant: str, digits_model, points) -> None:
    x, y = points
    attack = foolbox2(variant)
    eps = EPS[attack.norm]
    for check in checks.ALL_CHECKS:
        check(attack, digits_model, x, y, eps)
    if is_minimal(attack):  # the unbounded search: in the box, finite, x where it failed
        result = checks.run_attack(attack, digits_model, x, y, math.inf)
        assert float(result.min()) >= 0 and float(result.max()) <= 1 and bool(torch.isfinite(result).all())
        assert torch.equal(checks.run_attack(attack, digits_model, x, y, 0.0), x)
