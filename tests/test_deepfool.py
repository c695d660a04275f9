"""robeval's DeepFool: against foolbox 3, against the paper's closed form for affine
classifiers, and against the minimal-norm attack contract."""

from __future__ import annotations

import math

import foolbox as fb
import pytest
import torch
from torch import nn

import robeval
from robeval.attacks.base import is_minimal, is_targeted, perturbation_norms
from robeval.attacks.deepfool import DeepFool  # the import registers "deepfool"
from robeval.errors import RobevalError
from tests import attack_checks as checks

FOOLBOX = {"l2": fb.attacks.L2DeepFoolAttack, "linf": fb.attacks.LinfDeepFoolAttack}


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="module", params=["l2", "linf"])
def unbounded(request, digits_model, digits_test):
    """(norm, ours, foolbox's raw advs, our advs at eps=inf), computed once per norm."""
    norm = request.param
    x, y = digits_test
    ours = robeval.attacks.get(f"deepfool:norm={norm}")
    reference = FOOLBOX[norm](steps=ours.steps, overshoot=ours.overshoot, candidates=ours.candidates)
    raw, _, _ = reference(fb.PyTorchModel(digits_model, bounds=(0, 1)), x, y, epsilons=None)
    digits_model.zero_grad(set_to_none=True)  # foolbox leaves parameter gradients behind
    return norm, ours, raw, ours(digits_model, x, y)


# --- agreement with foolbox 3 ------------------------------------------------------


def test_agrees_with_foolbox(unbounded, digits_model, digits_test) -> None:
    norm, _, raw, x_adv = unbounded
    x, y = digits_test
    clean = predictions(digits_model, x) == y
    ok_ref = clean & (predictions(digits_model, raw) != y)
    ok_ours = clean & (predictions(digits_model, x_adv) != y)
    n_ref = perturbation_norms(raw - x, norm)
    n_ours = perturbation_norms(x_adv - x, norm)

    # Robust accuracy at the quartiles of foolbox's minimal norms: a sample is robust at
    # eps when clean-correct and not fooled within eps (the finite-eps call is checked
    # against this reading in test_finite_eps_keeps_only_adversarials_inside_the_ball).
    for q in (0.25, 0.5, 0.75):
        eps = float(n_ref[ok_ref].quantile(q))
        acc_ref = float((clean & ~(ok_ref & (n_ref <= eps))).float().mean())
        acc_ours = float((clean & ~(ok_ours & (n_ours <= eps))).float().mean())
        assert abs(acc_ours - acc_ref) <= 0.02, f"q{q} eps {eps:.4f}: ours {acc_ours} vs foolbox {acc_ref}"

    both = ok_ref & ok_ours
    assert both.sum() >= 0.95 * clean.sum()
    med_ref, med_ours = float(n_ref[both].median()), float(n_ours[both].median())
    assert abs(med_ours - med_ref) <= 0.1 * med_ref, f"median {norm}: ours {med_ours} vs foolbox {med_ref}"

    # Same algorithm, same order of operations: the iterates themselves agree.
    # (On CPU they are bit-identical; the slack is for other BLAS/conv kernels, where a
    # last-bit difference can flip a sample's stopping step.)
    per_sample = (x_adv - raw).flatten(1).abs().amax(1)
    assert float((per_sample[both] < 1e-4).float().mean()) >= 0.98


# --- the closed form for affine classifiers (paper, sec. 2 and 3.1) -----------------


def affine_problem(num_classes: int, dim: int = 16, n: int = 64):
    """A linear classifier whose decision boundaries pass near the box centre, and
    inputs around that centre labelled with its own predictions."""
    gen = torch.Generator().manual_seed(num_classes)
    model = nn.Linear(dim, num_classes)
    with torch.no_grad():
        model.weight.copy_(torch.randn(num_classes, dim, generator=gen))
        model.bias.copy_(-model.weight.sum(1) * 0.5 + 0.01 * torch.randn(num_classes, generator=gen))
    model.eval()
    x = (0.5 + 0.05 * torch.randn(n, dim, generator=gen)).clamp(0.3, 0.7)
    return model, x, predictions(model, x)


@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("overshoot", [0.02, 0.0])
def test_affine_classifier_one_step_to_the_nearest_boundary(num_classes, norm, overshoot) -> None:
    """For f affine, the distance from x to the region of another class is
    ``min_k |f_k - f_y| / ||w_k - w_y||_q`` (q = 2 for L2, 1 for L-inf) and DeepFool
    reaches that boundary in one step; the returned perturbation is ``(1 + overshoot)``
    times it (plus foolbox's 1e-4 stabiliser), along ``w_l - w_y`` (L2) or its sign (L-inf)."""
    model, x, y = affine_problem(num_classes)
    with torch.no_grad():
        logits = model(x)
    w = model.weight.detach()
    diffs = w.unsqueeze(0) - w[y].unsqueeze(1)  # (n, C, d): w_k - w_y
    gaps = (logits - logits.gather(1, y[:, None])).abs()  # |f_k - f_y|
    dual = diffs.norm(p=2, dim=-1) if norm == "l2" else diffs.abs().sum(-1)
    dist = (gaps / dual).scatter(1, y[:, None], math.inf)  # exclude k = y
    true_dist, nearest = dist.min(1)
    direction = diffs[torch.arange(len(x)), nearest]
    if norm == "l2":
        direction = direction / direction.norm(dim=-1, keepdim=True)
    else:
        direction = direction.sign()
    expected = x + (1 + overshoot) * (true_dist + 1e-4)[:, None] * direction
    assert expected.min() > 0 and expected.max() < 1, "the test wants clipping inactive"

    forwards = []
    model.register_forward_hook(lambda _m, inp, _o: forwards.append(len(inp[0])))
    attack = robeval.attacks.get("deepfool", norm=norm, overshoot=overshoot)
    x_adv = attack(model, x, y)

    # one forward for the candidates, one for the step, one that finds all adversarial
    assert forwards == [len(x)] * 3
    assert (predictions(model, x_adv) != y).all()
    returned = perturbation_norms(x_adv - x, norm)
    torch.testing.assert_close(returned, (1 + overshoot) * (true_dist + 1e-4), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-5)


# --- the minimal-norm contract ----------------------------------------------------


def test_unbounded_finds_nearly_all(unbounded, digits_model, digits_test) -> None:
    _, _, _, x_adv = unbounded
    x, y = digits_test
    clean = predictions(digits_model, x) == y
    fooled = predictions(digits_model, x_adv) != y
    assert float((fooled & clean).sum()) >= 0.99 * float(clean.sum())
    # samples misclassified to begin with come back unchanged
    assert torch.equal(x_adv[~clean], x[~clean])
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_finite_eps_keeps_only_adversarials_inside_the_ball(unbounded, digits_model, digits_test) -> None:
    norm, ours, _, x_adv = unbounded
    x, y = digits_test
    norms = perturbation_norms(x_adv - x, norm)
    eps = float(norms[norms > 0].median())
    bounded = ours(digits_model, x, y, eps=eps)
    inside = norms <= eps
    assert 0 < int(inside.sum()) < len(x)
    assert torch.equal(bounded[inside], x_adv[inside])
    assert torch.equal(bounded[~inside], x[~inside])
    assert torch.equal(ours(digits_model, x, y, eps=0.0), x)


@pytest.mark.parametrize(
    "check",
    [checks.check_budget_and_box, checks.check_input_not_mutated, checks.check_mode_unchanged,
     checks.check_deterministic, checks.check_lowers_accuracy],
    ids=lambda c: c.__name__,
)
@pytest.mark.parametrize(("spec", "eps"), [("deepfool", 1.0), ("deepfool:norm=linf", 0.1)])
def test_attack_contract(spec, eps, check, digits_model, digits_test) -> None:
    x, y = digits_test
    check(robeval.attacks.get(spec), digits_model, x[:32], y[:32], eps)


def test_flags_defaults_and_name() -> None:
    attack = robeval.attacks.get("deepfool")
    assert is_minimal(attack) and not is_targeted(attack)
    assert (attack.norm, attack.steps, attack.overshoot, attack.candidates, attack.loss) == (
        "l2", 100, 0.02, 10, "logits")
    linf = robeval.attacks.get("deepfool:norm=linf,candidates=none,loss=crossentropy")
    assert (linf.norm, linf.candidates, linf.loss) == ("linf", None, "crossentropy")
    assert robeval.attacks.canonical_name(robeval.attacks.get("deepfool:norm=linf")) == "deepfool:norm=linf"


def test_crossentropy_loss_and_all_candidates_work(digits_model, digits_test) -> None:
    x, y = digits_test
    x, y = x[:64], y[:64]
    base = robeval.attacks.get("deepfool")(digits_model, x, y)
    for spec in ("deepfool:loss=crossentropy", "deepfool:candidates=none", "deepfool:candidates=3"):
        x_adv = robeval.attacks.get(spec)(digits_model, x, y)
        assert checks.accuracy(digits_model, x_adv, y) <= 0.05, spec
    # the log-softmax differences equal the logit differences, so the search is the same
    same = robeval.attacks.get("deepfool:loss=crossentropy")(digits_model, x, y)
    assert (same - base).abs().max() < 1e-3


def test_target_is_refused(digits_model, digits_test) -> None:
    x, y = digits_test
    with pytest.raises(ValueError, match="no targeted mode"):
        robeval.attacks.get("deepfool")(digits_model, x[:4], y[:4], eps=math.inf, target=(y[:4] + 1) % 10)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("deepfool:steps=0", "steps must be >= 1"), ("deepfool:overshoot=-0.1", "overshoot must be >= 0"),
     ("deepfool:candidates=1", "candidates must be >= 2"), ("deepfool:norm=l1", "must be one of"),
     ("deepfool:loss=hinge", "must be one of")],
)
def test_bad_parameters_are_one_clear_error(spec: str, fragment: str) -> None:
    with pytest.raises(RobevalError, match=fragment):
        robeval.attacks.get(spec)


def test_direct_construction_validates() -> None:
    with pytest.raises(ValueError, match="norm must be one of"):
        DeepFool(norm="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be >= 1"):
        DeepFool(steps=0)
