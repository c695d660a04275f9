"""robeval's ADef: the resampling it rests on, the deformation contract (images are the
deformation of the field they report, bounded fields), its strength on the digits model,
and the smoothing of its fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import robeval
from robeval.attacks.adef import (  # the import registers "adef"
    ADef,
    deform,
    gaussian_smooth,
)
from robeval.attacks.base import (
    Deformation,
    field_norms,
    is_minimal,
    is_targeted,
    perturbation_norms,
)
from robeval.errors import RobevalError


def predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def constant_field(n: int, h: int, w: int, dy: float, dx: float) -> torch.Tensor:
    field = torch.zeros(n, 2, h, w)
    field[:, 0], field[:, 1] = dy, dx
    return field


@pytest.fixture(scope="module")
def unbounded(digits_model, digits_test) -> Deformation:
    x, y = digits_test
    return ADef()(digits_model, x, y)


# --- deform ----------------------------------------------------------------------------


def test_zero_field_is_the_identity() -> None:
    x = torch.rand(5, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    assert (deform(x, torch.zeros(5, 2, 7, 9)) - x).abs().max() <= 1e-6


@pytest.mark.parametrize(("dy", "dx"), [(0, 2), (0, -1), (1, 0), (-2, 3)])
def test_integer_shift_is_a_clamped_roll(dy: int, dx: int) -> None:
    x = torch.rand(2, 1, 8, 10, generator=torch.Generator().manual_seed(1))
    out = deform(x, constant_field(2, 8, 10, dy, dx))
    rows = (torch.arange(8) + dy).clamp(0, 7)
    cols = (torch.arange(10) + dx).clamp(0, 9)
    expected = x[:, :, rows][:, :, :, cols]  # out[i, j] = x[i + dy, j + dx], border clamped
    assert (out - expected).abs().max() <= 1e-5
    # in the interior that is exactly a torch.roll by (-dy, -dx)
    rolled = torch.roll(x, shifts=(-dy, -dx), dims=(2, 3))
    inner = (slice(None), slice(None), slice(max(0, -dy), 8 - max(0, dy)), slice(max(0, -dx), 10 - max(0, dx)))
    assert (out[inner] - rolled[inner]).abs().max() <= 1e-5


def test_half_pixel_shift_averages_neighbours() -> None:
    x = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    right = deform(x, constant_field(2, 6, 6, 0.0, 0.5))
    assert (right[..., :-1] - (x[..., :-1] + x[..., 1:]) / 2).abs().max() <= 1e-5
    assert (right[..., -1] - x[..., -1]).abs().max() <= 1e-5  # past the border: border value
    down = deform(x, constant_field(2, 6, 6, 0.5, 0.0))
    assert (down[..., :-1, :] - (x[..., :-1, :] + x[..., 1:, :]) / 2).abs().max() <= 1e-5
    # a diagonal half-pixel shift is the mean of the 2x2 block
    diag = deform(x, constant_field(2, 6, 6, 0.5, 0.5))
    block = (x[..., :-1, :-1] + x[..., 1:, :-1] + x[..., :-1, 1:] + x[..., 1:, 1:]) / 4
    assert (diag[..., :-1, :-1] - block).abs().max() <= 1e-5


def test_deform_rejects_malformed_fields() -> None:
    with pytest.raises(ValueError, match="field"):
        deform(torch.rand(2, 1, 4, 4), torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_gaussian_smooth_is_scipys_gaussian_filter(sigma: float) -> None:
    a = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = np.stack([[ndimage.gaussian_filter(a[i, c].numpy(), sigma) for c in range(2)] for i in range(3)])
    np.testing.assert_allclose(gaussian_smooth(a, sigma).numpy(), ref, atol=1e-12)


# --- the deformation contract ------------------------------------------------------------


def test_returns_the_deformation_of_its_field(unbounded, digits_model, digits_test) -> None:
    x, y = digits_test
    x_adv, field = unbounded.x_adv, unbounded.field
    assert field.shape == (len(x), 2, 8, 8) and field.isfinite().all()
    assert (deform(x, field) - x_adv).abs().max() <= 1e-5
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1

    clean = predictions(digits_model, x) == y
    fooled = predictions(digits_model, x_adv) != y
    moved = field_norms(field) > 0
    # a non-zero field exactly where a clean-correct point was fooled; x itself elsewhere.
    # ADef stops at the decision boundary, so a deformed point may sit on an exact logit
    # tie that another batch composition breaks the other way: those are left out.
    with torch.no_grad():
        top2 = digits_model(x_adv).topk(2, dim=1).values
    tie = (top2[:, 0] - top2[:, 1]) <= 1e-4 * top2[:, 0].abs().clamp_min(1)
    assert tie.float().mean() < 0.25, "most points on a tie: the boundary test says nothing"
    assert torch.equal(moved[~tie], (clean & fooled)[~tie])
    assert not (tie & ~moved).any() or torch.equal(x_adv[tie & ~moved], x[tie & ~moved])
    assert torch.equal(x_adv[~moved], x[~moved])
    # pixels are moved, not noised: a bilinear resampling stays inside each image's range
    # of values (additive noise would not), and it changes the image
    lo, hi = x.flatten(1).amin(1), x.flatten(1).amax(1)
    assert (x_adv.flatten(1).amin(1) >= lo - 1e-6).all() and (x_adv.flatten(1).amax(1) <= hi + 1e-6).all()
    assert (perturbation_norms(x_adv - x, "l2")[moved] > 0).all()


def test_lowers_accuracy_unbounded_and_at_one_pixel(unbounded, digits_model, digits_test) -> None:
    x, y = digits_test
    clean = predictions(digits_model, x) == y
    fooled = clean & (predictions(digits_model, unbounded.x_adv) != y)
    # measured: every clean-correct digit is fooled, median field norm ~0.84 px
    assert fooled.sum() >= 0.9 * clean.sum()
    clean_acc = float(clean.float().mean())
    bounded = ADef()(digits_model, x, y, eps=1.0)
    acc = float((predictions(digits_model, bounded.x_adv) == y).float().mean())
    assert acc <= clean_acc - 0.3, (clean_acc, acc)  # measured: 0.98 -> 0.35


@pytest.mark.parametrize("norm", ["field", "linf", "l2"])
def test_finite_eps_keeps_only_deformations_inside_the_bound(norm, unbounded, digits_model, digits_test) -> None:
    x, y = digits_test
    attack = ADef(norm=norm)
    if norm == "field":
        full = field_norms(unbounded.field)
    else:
        full = perturbation_norms(unbounded.x_adv - x, norm)
    moved = field_norms(unbounded.field) > 0
    eps = float(full[moved].median())
    result = attack(digits_model, x, y, eps=eps)
    measured = field_norms(result.field) if norm == "field" else perturbation_norms(result.x_adv - x, norm)
    assert (measured <= eps + 1e-6).all()
    assert (deform(x, result.field) - result.x_adv).abs().max() <= 1e-5
    inside = full.double() <= eps
    assert torch.equal(result.x_adv[inside], unbounded.x_adv[inside])
    assert torch.equal(result.field[inside], unbounded.field[inside])
    assert torch.equal(result.x_adv[~inside], x[~inside])
    assert (result.field[~inside] == 0).all()
    assert 0 < int((moved & inside).sum()) < int(moved.sum())


def test_eps_zero_and_empty_batches(digits_model, digits_test) -> None:
    x, y = digits_test
    result = ADef()(digits_model, x[:4], y[:4], eps=0)
    assert torch.equal(result.x_adv, x[:4]) and result.x_adv is not x[:4]
    assert torch.equal(result.field, torch.zeros(4, 2, 8, 8))
    empty = ADef()(digits_model, x[:0], y[:0])
    assert empty.x_adv.shape == (0, 1, 8, 8) and empty.field.shape == (0, 2, 8, 8)


def test_contract_hygiene(digits_model, digits_test) -> None:
    x, y = digits_test[0][:32], digits_test[1][:32]
    x_copy = x.clone()
    digits_model.zero_grad(set_to_none=True)
    for training in (False, True):
        digits_model.train(training)
        try:
            first = ADef()(digits_model, x, y, generator=torch.Generator().manual_seed(0))
            assert all(m.training == training for m in digits_model.modules())
        finally:
            digits_model.eval()
    assert torch.equal(x, x_copy)
    assert all(p.grad is None for p in digits_model.parameters())
    torch.manual_seed(5)
    again = ADef()(digits_model, x, y)
    assert torch.equal(first.x_adv, again.x_adv) and torch.equal(first.field, again.field)


def test_smoothing_makes_smoother_fields(digits_model, digits_test) -> None:
    x, y = digits_test[0][:64], digits_test[1][:64]

    def roughness(sigma: float) -> torch.Tensor:
        field = ADef(sigma=sigma)(digits_model, x, y).field
        moved = field_norms(field) > 0
        diffs = (field[..., 1:, :] - field[..., :-1, :]).square().flatten(1).sum(1)
        diffs = diffs + (field[..., 1:] - field[..., :-1]).square().flatten(1).sum(1)
        return (diffs / field.square().flatten(1).sum(1).clamp_min(1e-12))[moved]

    rough, smooth = roughness(0.0), roughness(2.0)
    assert len(rough) > 40 and len(smooth) > 40
    # high-frequency energy relative to the field's energy
    assert float(smooth.median()) < 0.25 * float(rough.median()), (float(smooth.median()), float(rough.median()))


# --- registry, parameters --------------------------------------------------------------


def test_registered_as_a_minimal_untargeted_field_attack(digits_model, digits_test) -> None:
    attack = robeval.attacks.get("adef:sigma=0.5,candidates=3")
    assert isinstance(attack, ADef) and attack.sigma == 0.5 and attack.candidates == 3
    assert attack.norm == "field" and is_minimal(attack) and not is_targeted(attack)
    x, y = digits_test
    with pytest.raises(ValueError, match="adef has no targeted mode"):
        attack(digits_model, x[:4], y[:4], eps=math.inf, target=(y[:4] + 1) % 10)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [({"sigma": -1.0}, "sigma must be"), ({"overshoot": 0.5}, "overshoot must be"),
     ({"max_iter": 0}, "max_iter must be"), ({"candidates": 1}, "candidates must be"),
     ({"norm": "l0"}, "must be one of")],
)
def test_bad_parameters_raise(params, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        ADef(**params)
    spec = "adef:" + ",".join(f"{k}={v}" for k, v in params.items())
    with pytest.raises(RobevalError, match=fragment):
        robeval.attacks.get(spec)
