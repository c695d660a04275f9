"""The ``ensemble`` attack (issue 15): the per-sample smallest adversarial over its
members, never above any member's curve, run as a cascade at a finite eps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import robeval
from robeval.attacks import advlib, attacks
from robeval.attacks.ensemble import built, parse_members
from robeval.errors import RobevalError

pytest.importorskip("adv_lib")
N = 32
MEMBERS = "deepfool+ddn/steps=10+fmn/steps=10"


@pytest.fixture(scope="module")
def data(digits_model, digits_test):
    x, y = digits_test
    with torch.no_grad():
        ok = digits_model(x[:N]).argmax(1) == y[:N]
    return digits_model, x[:N][ok], y[:N][ok]


def norms_of(model, attack, x, y, x_adv) -> torch.Tensor:
    """Per point the norm of its adversarial, inf where it is none."""
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    return torch.where(fooled, advlib.lp_norms(x_adv - x, attack.norm).double(), math.inf)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_the_curve_is_never_above_any_members(data, norm: str) -> None:
    model, x, y = data
    members = MEMBERS if norm == "l2" else "deepfool+fmn/steps=10"
    ensemble = robeval.attacks.get(f"ensemble:members={members},norm={norm}")
    best = norms_of(model, ensemble, x, y, ensemble(model, x, y, eps=math.inf))
    alone = [norms_of(model, m, x, y, m(model, x, y, eps=math.inf)) for m in ensemble.member_attacks()]
    assert torch.equal(best, torch.stack(alone).amin(dim=0))  # each member ran as it runs alone
    for grid_eps in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0):
        ensemble_acc = float((best > grid_eps).double().mean())
        assert all(ensemble_acc <= float((n > grid_eps).double().mean()) for n in alone)


@dataclass(frozen=True, kw_only=True)
class _Spy:
    """A minimal-norm member that records how many points it was given."""

    name: ClassVar[str] = "spy"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = True
    norm: str = "l2"
    seen: ClassVar[list[int]] = []

    def __call__(self, model, x, y, *, eps, generator=None, target=None):
        self.seen.append(len(x))
        return x.clone()


@pytest.fixture
def spy():
    attacks.register("spy")(_Spy)
    built.cache_clear()
    _Spy.seen.clear()
    yield _Spy
    attacks.unregister("spy")
    built.cache_clear()


def test_at_a_finite_eps_a_member_searches_only_the_points_still_robust(data, spy) -> None:
    model, x, y = data
    deepfool = robeval.attacks.get("deepfool")
    first = norms_of(model, deepfool, x, y, deepfool(model, x, y, eps=math.inf))
    eps = float(first.median())
    cascade = robeval.attacks.get("ensemble:members=deepfool+spy")
    x_adv = cascade(model, x, y, eps=eps)
    assert spy.seen == [int((first > eps).sum())]
    assert torch.equal(norms_of(model, cascade, x, y, x_adv) <= eps, first <= eps)
    robeval.attacks.get("ensemble:members=deepfool+spy")(model, x, y, eps=math.inf)
    assert spy.seen[-1] == len(x)  # unbounded: every point can still improve


def test_finite_eps_matches_the_unbounded_curve(data) -> None:
    model, x, y = data
    ensemble = robeval.attacks.get(f"ensemble:members={MEMBERS}")
    unbounded = norms_of(model, ensemble, x, y, ensemble(model, x, y, eps=math.inf))
    eps = float(unbounded.quantile(0.3))
    bounded = ensemble(model, x, y, eps=eps)
    assert float(advlib.lp_norms(bounded - x, "l2").max()) <= eps
    assert torch.equal(norms_of(model, ensemble, x, y, bounded) <= eps, unbounded <= eps)


def test_warm_start_only_improves_on_the_bound(data) -> None:
    model, x, y = data
    deepfool = robeval.attacks.get("deepfool")
    bound = norms_of(model, deepfool, x, y, deepfool(model, x, y, eps=math.inf))
    warm = robeval.attacks.get("ensemble:members=deepfool+fmn/steps=10,warm_start=true")
    found = norms_of(model, warm, x, y, warm(model, x, y, eps=math.inf))
    assert bool((found <= bound).all()) and float(found.mean()) < 0.97 * float(bound.mean())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_a_long_first_step_still_only_improves_on_the_bound(data, norm: str) -> None:
    """The README's fast curve (FMN's step 10 times adv-lib's, projected back onto the
    ball) keeps the warm start's guarantee and moves every point's bound down on average."""
    model, x, y = data
    deepfool = robeval.attacks.get(f"deepfool:norm={norm}")
    bound = norms_of(model, deepfool, x, y, deepfool(model, x, y, eps=math.inf))
    fast = robeval.attacks.get(f"ensemble:members=deepfool+fmn/steps=10/alpha_init=10,norm={norm},warm_start=true")
    found = norms_of(model, fast, x, y, fast(model, x, y, eps=math.inf))
    assert bool((found <= bound).all()) and float(found.mean()) < 0.97 * float(bound.mean())


def test_the_readmes_ensemble_spellings_build() -> None:
    """Every ``ensemble:...`` the README recommends is a valid spelling (users copy them)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    spellings = set(re.findall(r"`(ensemble:[^`\s]+)`", readme))
    assert len(spellings) >= 3
    for spelling in spellings:
        assert robeval.attacks.get(spelling).member_attacks()


def test_deterministic_and_untouched_inputs(data) -> None:
    model, x, y = data
    ensemble = robeval.attacks.get("ensemble:members=deepfool+fmn/steps=5")
    x_copy = x.clone()
    first = ensemble(model, x, y, eps=math.inf, generator=torch.Generator().manual_seed(1))
    second = ensemble(model, x, y, eps=math.inf, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, second) and torch.equal(x, x_copy)


def test_members_parse_with_their_parameters() -> None:
    assert parse_members("deepfool+fmn/steps=1000/gamma_init=0.1") == [
        ("deepfool", {}), ("fmn", {"steps": 1000, "gamma_init": 0.1})]
    fmn = robeval.attacks.get("ensemble:members=fmn/steps=7,norm=linf").member_attacks()[0]
    assert (fmn.name, fmn.norm, fmn.steps) == ("fmn", "linf", 7)


@pytest.mark.parametrize(("spec", "message"), [
    ("ensemble:members=deepfool+pgd", "budgeted attack"),
    ("ensemble:members=ddn,norm=linf", "must be one of l2"),
    ("ensemble:members=deepfool++fmn", "empty entry"),
    ("ensemble:members=fmn/steps", "key=value"),
    ("ensemble:members=ensemble", "cannot be a member"),
    ("ensemble:members=fmm", "did you mean 'fmn'"),
])
def test_bad_members_are_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(RobevalError, match=message):
        robeval.attacks.get(spec)


def test_targeted_calls_are_refused(data) -> None:
    model, x, y = data
    with pytest.raises(RobevalError, match="untargeted"):
        robeval.attacks.get("ensemble")(model, x, y, eps=math.inf, target=(y + 1) % 10)
