"""DDN, FMN, ALMA and APGD (issue 15): each agrees with adv-lib called directly on the same
model and data; adv-lib imports without visdom and leaves none behind; FMN's fix; the
budgets, the box and the norms adv-lib's attacks add (L1, L0)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch

import robeval
from robeval.attacks import advlib
from robeval.attacks.fmn import FMN
from robeval.errors import RobevalError

pytest.importorskip("adv_lib")
N = 48  # digits per check: enough to fool most, a second or so per attack


@pytest.fixture(scope="module")
def data(digits_model, digits_test):
    x, y = digits_test
    for p in digits_model.parameters():
        p.requires_grad_(False)
    yield digits_model, x[:N], y[:N]
    for p in digits_model.parameters():
        p.requires_grad_(True)


@pytest.fixture(scope="module")
def ddn_start(data) -> torch.Tensor:
    """DDN-30's adversarials of the digits (a warm start, and what FMN must match)."""
    model, x, y = data
    return robeval.attacks.get("ddn:steps=30")(model, x, y, eps=math.inf)


def lib(name: str, module: str = "attacks"):
    return advlib.library(name, module)


def fooled(model, x_adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


# --- importing adv-lib ----------------------------------------------------------------


def test_importing_advlib_leaves_no_visdom_in_the_users_process() -> None:
    """In a fresh interpreter (this one may have imported adv-lib already): the attacks
    import, ``visdom`` is not in ``sys.modules`` afterwards, ``import visdom`` still fails,
    and adv-lib's logger says what to install."""
    code = textwrap.dedent("""
        import importlib.util, sys
        from robeval.attacks import advlib
        from robeval.errors import RobevalError
        assert importlib.util.find_spec("visdom") is None, "visdom is installed here"
        assert callable(advlib.attacks_module().ddn)
        assert "visdom" not in sys.modules
        try:
            import visdom
            raise SystemExit("import visdom worked")
        except ModuleNotFoundError:
            pass
        from adv_lib.utils.visdom_logger import VisdomLogger
        try:
            VisdomLogger(port=8097)
            raise SystemExit("the logger started")
        except RobevalError as exc:
            assert "pip install visdom" in str(exc)
        print("ok")
    """)
    import importlib.util

    if importlib.util.find_spec("visdom") is not None:
        pytest.skip("visdom is installed: adv-lib imports it as is")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_missing_advlib_is_one_line_naming_the_install(monkeypatch, data) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "adv_lib.attacks", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "adv_lib" else real(name, *a))
    model, x, y = data
    with pytest.raises(RobevalError, match=r"pip install --no-deps adv-lib==0\.2\.8"):
        robeval.attacks.get("ddn")(model, x, y, eps=math.inf)


# --- agreement with adv-lib called directly ------------------------------------------


@pytest.mark.parametrize("targeted", [False, True])
def test_ddn_is_advlibs_ddn(data, targeted: bool) -> None:
    model, x, y = data
    target = (y + 1) % 10 if targeted else None
    ours = robeval.attacks.get("ddn:steps=15")(model, x, y, eps=math.inf, target=target)
    torch.manual_seed(0)  # the seed robeval draws without a generator
    theirs = lib("ddn")(model, x, y if target is None else target, targeted=targeted, steps=15)
    assert torch.equal(ours, theirs)
    assert fooled(model, ours, y).float().mean() > 0.8


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_alma_is_advlibs_alma(data, norm: str) -> None:
    model, x, y = data
    generator = torch.Generator().manual_seed(5)
    seed = advlib.library_seed(torch.Generator().manual_seed(5))
    ours = robeval.attacks.get(f"alma:steps=25,norm={norm}")(model, x, y, eps=math.inf, generator=generator)
    torch.manual_seed(seed)
    theirs = lib("alma")(model, x, y, penalty=lib("all_penalties", "utils.lagrangian_penalties")["P2"],
                         num_steps=25, distance=norm, init_lr_distance=1.0)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("norm", ["l0", "l1", "l2", "linf"])
def test_fmn_without_the_fix_is_advlibs_fmn(data, norm: str) -> None:
    model, x, y = data
    ours = robeval.attacks.get(f"fmn:norm={norm},steps=15,grow_eps=false")(model, x, y, eps=math.inf)
    theirs = lib("fmn")(model, x, y, norm=advlib.LP[norm], steps=15)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_fmn_warm_start_is_advlibs_starting_points(data, ddn_start, norm: str) -> None:
    model, x, y = data
    start = ddn_start
    ok = fooled(model, start, y)
    x, y, start = x[ok], y[ok], start[ok]
    ours = FMN(norm=norm, steps=10, grow_eps=False).search(model, x, y, start=start)
    theirs = lib("fmn")(model, x, y, norm=advlib.LP[norm], steps=10, starting_points=start)
    assert torch.equal(ours, theirs)


def test_fmn_targeted_is_advlibs(data) -> None:
    model, x, y = data
    target = (y + 3) % 10
    ours = robeval.attacks.get("fmn:steps=15,grow_eps=false")(model, x, y, eps=math.inf, target=target)
    theirs = lib("fmn")(model, x, target, norm=2.0, targeted=True, steps=15)
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        assert (model(ours).argmax(1) == target).float().mean() > 0.8


@pytest.mark.parametrize(("spec", "eps", "kwargs"), [
    ("apgd:steps=8", 0.1, dict(norm=math.inf, loss_function="ce")),
    ("apgd:steps=8,loss=dlr,norm=l2", 0.6, dict(norm=2.0, loss_function="dlr")),
    ("apgd:steps=8,norm=l1", 2.0, dict(norm=1.0, loss_function="ce")),
    ("apgd:steps=8,norm=l1,large_reps=true", 2.0, dict(norm=1.0, loss_function="ce", use_large_reps=True)),
    ("apgd:steps=8,loss=dlr,targets=3", 0.1, dict(norm=math.inf, loss_function="dlr", num_targets=3)),
])
def test_apgd_is_advlibs_apgd(data, spec: str, eps: float, kwargs: dict) -> None:
    model, x, y = data
    ours = robeval.attacks.get(spec)(model, x, y, eps=eps, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(advlib.library_seed(torch.Generator().manual_seed(3)))
    function = lib("apgd_targeted" if "num_targets" in kwargs else "apgd")
    theirs = function(model, x, y, eps=eps, n_iter=8, **kwargs)
    assert torch.equal(ours, theirs)


def test_apgd_targeted_mode_descends_towards_the_target(data) -> None:
    model, x, y = data
    target = (y + 1) % 10
    ours = robeval.attacks.get("apgd:steps=10")(model, x, y, eps=0.3, target=target,
                                                generator=torch.Generator().manual_seed(0))
    torch.manual_seed(advlib.library_seed(torch.Generator().manual_seed(0)))
    theirs = lib("apgd")(model, x, target, eps=0.3, norm=math.inf, targeted=True, n_iter=10, loss_function="ce")
    assert torch.equal(ours, theirs)


# --- FMN's failures and the fix ------------------------------------------------------


def test_fmn_radius_grows_where_no_adversarial_was_found() -> None:
    """The fix: a sample that never was adversarial gets at least ``eps (1 + gamma)``,
    where adv-lib's rule gives the first-order estimate ``||delta|| + |m| / ||grad||``."""
    eps, norms = torch.tensor([1.0, math.inf]), torch.tensor([0.9, 0.0])
    loss, grad = torch.tensor([-0.1, -2.0]), torch.ones(2, 4)  # ||grad||_2 = 2: estimate 0.95 and 1.0
    nothing = torch.zeros(2, dtype=torch.bool)
    args = (eps, norms, loss, grad, nothing, nothing, torch.full((2,), 9.0), 0.05, 2.0)
    assert torch.allclose(FMN(grow_eps=False)._next_eps(*args), torch.tensor([0.95, 1.0]))
    assert torch.allclose(FMN(grow_eps=True)._next_eps(*args), torch.tensor([1.05, 1.0]))


def test_fmn_fails_nowhere_ddn_succeeds(data, ddn_start) -> None:
    model, x, y = data
    ddn = fooled(model, ddn_start, y)
    fmn = fooled(model, robeval.attacks.get("fmn:steps=30")(model, x, y, eps=math.inf), y)
    assert bool((fmn | ~ddn).all()), f"fmn failed on {int((ddn & ~fmn).sum())} points ddn fooled"


# --- invariants for the norms beyond the contract's L2 and L-inf ---------------------


@pytest.mark.parametrize(("spec", "eps"), [
    ("fmn:norm=l1,steps=20", 3.0), ("fmn:norm=l0,steps=20", 4.0), ("alma:norm=l1,steps=30", 3.0),
    ("apgd:norm=l1,steps=10", 3.0),
])
def test_l1_and_l0_answers_stay_in_the_ball_and_the_box(data, spec: str, eps: float) -> None:
    model, x, y = data
    attack = robeval.attacks.get(spec)
    x_adv = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    norms = advlib.lp_norms(x_adv - x, attack.norm)
    assert float(norms.max()) <= eps * (1 + 1e-5) + 1e-6
    assert fooled(model, x_adv, y).float().mean() > 0.3


@pytest.mark.parametrize("spec", ["fmn:norm=l1,steps=10", "fmn:norm=l0,steps=10", "alma:norm=l1,steps=10"])
def test_minimal_norm_answers_shrink_to_the_ball(data, spec: str) -> None:
    """A finite eps keeps exactly the unbounded answers inside the ball (one search, every eps)."""
    model, x, y = data
    attack = robeval.attacks.get(spec)
    unbounded = attack(model, x, y, eps=math.inf)
    norms = advlib.lp_norms(unbounded - x, attack.norm)
    eps = float(norms[fooled(model, unbounded, y)].median())
    bounded = attack(model, x, y, eps=eps)
    inside = norms.double() <= eps
    assert torch.equal(bounded[inside], unbounded[inside]) and torch.equal(bounded[~inside], x[~inside])


@pytest.mark.parametrize(("spec", "message"), [
    ("ddn:norm=linf", "must be one of l2"), ("fmn:norm=l3", "must be one of"), ("fmn:gamma_init=2", "gamma"),
    ("alma:norm=linf", "must be one of"), ("apgd:norm=l1,targets=-1", "targets >= 0"),
    ("apgd:large_reps=true", "norm=l1 only"),
])
def test_bad_parameters_are_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(RobevalError, match=message):
        robeval.attacks.get(spec)


def test_apgd_refuses_an_unbounded_call_and_images_outside_the_box(data) -> None:
    model, x, y = data
    with pytest.raises(RobevalError, match="finite eps"):
        robeval.attacks.get("apgd")(model, x, y, eps=math.inf)
    with pytest.raises(RobevalError, match=r"images in \[0, 1\]"):
        robeval.attacks.get("ddn")(model, x * 2 - 1, y, eps=math.inf)
