"""Every registered attack against the attack contract, and proof the checks bite."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import robeval
from robeval.attacks import attacks
from robeval.attacks.base import NORMS, is_nested, is_targeted
from robeval.errors import RobevalError
from tests import attack_checks as checks

# One budget per norm that a real attack on the digits model must bite at: L-inf and L2
# on the [0, 1] scale, L0 in changed entries (of 64), field in pixels, scale = noise std.
EPS = {"linf": 0.25, "l2": 2.0, "l1": 8.0, "l0": 12.0, "field": 1.5, "scale": 0.6}
GRID = {"linf": [0.0, 0.05, 0.1, 0.2, 0.3], "l2": [0.0, 0.5, 1.0, 2.0, 3.0], "l1": [0.0, 2.0, 4.0, 8.0, 12.0],
        "l0": [0.0, 2, 4, 8, 16],
        "field": [0.0, 0.25, 0.5, 1.0, 2.0], "scale": [0.0, 0.1, 0.3, 0.6, 1.0]}


# Attacks whose defaults are GPU-sized get cheaper settings here, and the low-pass filter
# a radius that bites on 8x8 digits (its default, half the width, keeps all they need);
# the defaults are checked against the papers in each attack's own tests.
FAST = {"cw": {"steps": 60, "binary_search_steps": 4}, "salt-and-pepper": {"steps": 100},
        "lowpass": {"radius": 1.5}, "autoattack": {"n_iter": 10, "n_queries": 100},
        "ddn": {"steps": 20}, "fmn": {"steps": 20}, "alma": {"steps": 30}, "apgd": {"steps": 10},
        "ensemble": {"members": "deepfool+ddn/steps=10+fmn/steps=10"},
        "lrc-data": {"dataset": "digits"}}
# Norms beyond NORMS that an attack searches in (fmn: L0 and L1; apgd: L1).
EXTRA_NORMS = {"fmn": ("l1", "l0"), "apgd": ("l1",)}


def attack_variants() -> list[str]:
    """Each registered attack with its defaults, plus its other norms. (The
    ``preset=foolbox2`` variants get the same checks in tests/test_foolbox2_preset.py.)"""
    variants = []
    for name in attacks.names():
        variants.append(name)
        fields = {f.name: f for f in dataclasses.fields(attacks.get(name))}
        if "norm" in fields:
            variants += [f"{name}:norm={n}" for n in (*NORMS, *EXTRA_NORMS.get(name, ()))
                         if n != fields["norm"].default and _valid(name, n)]
    return variants


def fast(spec: str) -> dict:
    """The cheaper settings for one variant (``NAME`` or ``NAME:params``)."""
    return FAST.get(spec.split(":")[0], {})


# Salt and pepper moves entries to 0 or 1: no answer fits an L-inf ball of 0.25.
MEANINGLESS = {("salt-and-pepper", "linf")}


def _valid(name: str, norm: str) -> bool:
    if (name, norm) in MEANINGLESS:
        return False
    try:
        robeval.attacks.get(name, norm=norm, **FAST.get(name, {}))
    except RobevalError:
        return False
    return True


@pytest.fixture(params=attack_variants())
def attack(request: pytest.FixtureRequest):
    return robeval.attacks.get(request.param, **fast(request.param))


# Attacks whose own test file runs every check of checks.ALL_CHECKS and the targeted check
# on each of their norms (at settings sized for that): C&W's 1,000-step searches are the
# most expensive variants here, so the contract and targeted checks run there only, and
# the eps-0 check here. Its monotonicity follows from test_cw.py::test_minimal_norm_contract
# (a bounded call is the unbounded answer restricted to the ball, in both norms), so the
# five-eps monotonicity check (five full searches) is not repeated here for it either.
OWN_CONTRACT = {"cw": "tests/test_cw.py::test_attack_contract, test_targeted_hits_the_target"}


def contract_variants() -> list[str]:
    return [v for v in attack_variants() if v.split(":")[0] not in OWN_CONTRACT]


def targeted_variants() -> list[str]:
    return [v for v in contract_variants() if is_targeted(attacks.get(v.split(":")[0]))]


@pytest.mark.parametrize("spec", targeted_variants())
def test_targeted_mode_moves_points_to_the_target(spec, digits_model, digits_test) -> None:
    x, y = digits_test
    attack = robeval.attacks.get(spec, **fast(spec))
    checks.check_targeted(attack, digits_model, x, y, EPS[attack.norm])


@pytest.mark.parametrize("spec", contract_variants())
@pytest.mark.parametrize("check", checks.ALL_CHECKS, ids=lambda c: c.__name__)
def test_attack_contract(spec, check, digits_model, digits_test) -> None:
    x, y = digits_test
    attack = robeval.attacks.get(spec, **fast(spec))
    check(attack, digits_model, x, y, EPS[attack.norm])


def test_accuracy_never_rises_with_eps(attack, digits_model, digits_test) -> None:
    if not is_nested(attack):
        pytest.skip("not nested: an answer at one eps is no answer at another (noise, filters)")
    if attack.name in OWN_CONTRACT:
        pytest.skip("monotone by its restriction check, tests/test_cw.py::test_minimal_norm_contract")
    x, y = digits_test
    checks.check_monotone_in_eps(attack, digits_model, x, y, GRID[attack.norm])


def test_eps_zero_returns_the_input(attack, digits_model, digits_test) -> None:
    x, y = digits_test
    assert torch.equal(checks.run_attack(attack, digits_model, x, y, 0.0), x)


# --- broken attacks: each must be caught by the check named after it ----------------


@dataclass(frozen=True)
class NoOp:
    name: ClassVar[str] = "noop"
    norm: str = "linf"

    def __call__(self, model, x, y, *, eps, generator=None, target=None):
        return x.clone()


@dataclass(frozen=True)
class OverBudget(NoOp):
    def __call__(self, model, x, y, *, eps, generator=None):
        return (x + 2 * eps * torch.sign(torch.randn(x.shape, generator=generator))).clamp(0, 1)


@dataclass(frozen=True)
class OutOfBox(NoOp):
    def __call__(self, model, x, y, *, eps, generator=None):
        return x + eps


@dataclass(frozen=True)
class Mutating(NoOp):
    def __call__(self, model, x, y, *, eps, generator=None):
        return x.add_(eps).clamp_(0, 1)


@dataclass(frozen=True)
class ModeChanging(NoOp):
    def __call__(self, model, x, y, *, eps, generator=None):
        model.eval()
        return x.clone()


@dataclass(frozen=True)
class IgnoresSeed(NoOp):
    def __call__(self, model, x, y, *, eps, generator=None):
        return (x + eps * torch.sign(torch.randn(x.shape))).clamp(0, 1)


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (NoOp(), checks.check_lowers_accuracy),
        (OverBudget(), checks.check_budget_and_box),
        (OutOfBox(), checks.check_budget_and_box),
        (Mutating(), checks.check_input_not_mutated),
        (ModeChanging(), checks.check_mode_unchanged),
        (IgnoresSeed(), checks.check_deterministic),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__),
)
def test_broken_attacks_fail_the_checks(broken, check, digits_model, digits_test) -> None:
    x, y = digits_test
    with pytest.raises(AssertionError):
        check(broken, digits_model, x.clone(), y, EPS["linf"])


def test_noop_fails_the_targeted_check(digits_model, digits_test) -> None:
    x, y = digits_test
    with pytest.raises(AssertionError):
        checks.check_targeted(NoOp(), digits_model, x, y, EPS["linf"])


def test_noop_passes_everything_but_lowering_accuracy(digits_model, digits_test) -> None:
    """So the suite would not mistake a no-op for an attack for any other reason."""
    x, y = digits_test
    for check in checks.ALL_CHECKS:
        if check is not checks.check_lowers_accuracy:
            check(NoOp(), digits_model, x, y, EPS["linf"])


# --- registry and parameters -----------------------------------------------------


def test_get_parses_parameters() -> None:
    pgd = robeval.attacks.get("pgd:norm=l2,steps=40,rel_stepsize=0.1,random_start=false")
    assert (pgd.norm, pgd.steps, pgd.rel_stepsize, pgd.random_start) == ("l2", 40, 0.1, False)
    assert robeval.attacks.get("pgd", steps=7).steps == 7
    assert robeval.attacks.canonical_name(pgd) == "pgd:norm=l2,random_start=false,rel_stepsize=0.1,steps=40"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("pdg", "did you mean 'pgd'"), ("pgd:stepz=3", "did you mean 'steps'"),
     ("pgd:steps=ten", "must be an integer"), ("pgd:norm=l7", "must be one of"),
     ("pgd:steps=0", "steps must be >= 1"), ("pgd:steps", "key=value")],
)
def test_bad_attack_specs_are_one_clear_error(spec: str, fragment: str) -> None:
    with pytest.raises(RobevalError, match=fragment):
        robeval.attacks.get(spec)


def test_fgsm_is_one_signed_gradient_step(digits_model, digits_test) -> None:
    """FGSM (Goodfellow et al. 2015, Eq. 3): x + eps * sign(grad) clipped, checked by hand."""
    x, y = digits_test
    x_req = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(digits_model(x_req), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_req)
    expected = (x + 0.1 * grad.sign()).clamp(0, 1)
    assert torch.allclose(robeval.attacks.get("fgsm")(digits_model, x, y, eps=0.1), expected)


# --- nested must be declared ---------------------------------------------------------


@dataclass(frozen=True)
class _ForgotNested:
    """A plug-in noise attack that forgot to say it is not nested."""

    name: ClassVar[str] = "forgot"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    norm: str = "scale"

    def __call__(self, model, x, y, *, eps, generator=None, target=None):
        return (x + eps * torch.randn(x.shape, generator=generator)).clamp(0, 1)


@dataclass(frozen=True)
class _DeclaresNested(_ForgotNested):
    name: ClassVar[str] = "declares"
    nested: ClassVar[bool] = False


@dataclass(frozen=True)
class _InheritsNested(_DeclaresNested):
    name: ClassVar[str] = "inherits"


@dataclass(frozen=True)
class _NestedField(_ForgotNested):
    name: ClassVar[str] = "field"
    nested: bool = False  # a parameter, not a declaration


@pytest.fixture
def require_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registration check on, whatever the module's switch says."""
    from robeval.attacks import registry

    monkeypatch.setattr(registry, "REQUIRE_NESTED", True)


def test_registering_an_attack_without_nested_is_refused(require_nested) -> None:
    with pytest.raises(TypeError, match=r"does not declare whether it is nested.*nested: ClassVar\[bool\] = True.*"
                                        r"nested: ClassVar\[bool\] = False"):
        attacks.register("forgot")(_ForgotNested)
    assert "forgot" not in attacks
    with pytest.raises(TypeError, match="dataclass field"):
        attacks.register("field")(_NestedField)
    assert "field" not in attacks


@pytest.mark.parametrize("cls", [_DeclaresNested, _InheritsNested])
def test_registering_an_attack_that_declares_nested_works(require_nested, cls) -> None:
    name = cls.name
    try:
        assert attacks.register(name)(cls) is cls
        attack = robeval.attacks.get(name)
        assert is_nested(attack) is False
    finally:
        attacks.unregister(name)


def test_every_registered_attack_declares_nested() -> None:
    from robeval.attacks import registry

    if not registry.REQUIRE_NESTED:
        pytest.skip("REQUIRE_NESTED is off until every built-in attack declares nested")
    for name, cls in attacks.items():
        registry.check_nested(cls, name)
        assert isinstance(registry.nested_declaration(cls), bool)


def test_is_nested_has_no_default(require_nested) -> None:
    from robeval.errors import AttackContractError

    with pytest.raises(AttackContractError, match="does not declare `nested`"):
        is_nested(_ForgotNested())
    assert is_nested(_DeclaresNested()) is False
