"""The options of the Fourier attacks (issue 14, items 4 and 5): the single Fourier
attack's ``scale`` (``peak``: max |P| = eps; ``eq6``: Absum Eq. 6 read literally) and the
``highpass`` attack's ``shift`` (what the zero-mean high-pass image is added to before
the [0, 1] clip)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import robeval.attacks.fourier  # noqa: F401  (registers sfa, lowpass, highpass)
from robeval.analysis.sfa_grid import sfa_grid
from robeval.attacks import get
from robeval.attacks.fourier import highpass, highpass_image, lowpass, sfa_perturbation
from robeval.errors import AttackContractError, RobevalError
from robeval.eval.checks import attack_norms

EPS = 80 / 255


def eq6_literal(l: int, m: int, height: int, width: int, eps: float) -> np.ndarray:
    """Absum Eq. (6) term by term with numpy's DFT matrices: ``eps ((1+j) (F)_l ⊗ (F)_m
    + (1-j) (F)_{n-l} ⊗ (F)_{n-m})``, ``(F)_{l,k} = exp(-j 2 pi l k / n)``, the Kronecker
    product reshaped row-major to ``(H, W)``. Returns the complex array."""
    f_h = np.exp(-2j * np.pi * np.outer(np.arange(height), np.arange(height)) / height)
    f_w = np.exp(-2j * np.pi * np.outer(np.arange(width), np.arange(width)) / width)
    first = np.kron(f_h[:, l % height], f_w[:, m % width])
    second = np.kron(f_h[:, (height - l) % height], f_w[:, (width - m) % width])
    return (eps * ((1 + 1j) * first + (1 - 1j) * second)).reshape(height, width)


def eq6_peak_over_eps(l: int, m: int, n: int) -> float:
    """Closed form of ``max |Re Eq. 6| / eps`` on an ``n x n`` image.

    ``P = 2 (cos t + sin t) = 2 sqrt 2 sin(t + pi/4)`` with the phases ``t`` running over
    the multiples of ``2 pi / g``, ``g = n / gcd(l, m, n)``. ``|sin(t + pi/4)|`` peaks at
    ``t = pi/4 + j pi``, i.e. at ``g/8 + j g/2`` in steps of ``2 pi / g``, so the peak is
    ``2 sqrt 2 cos(delta)`` with ``delta = (2 pi / g) * min_j dist(g/8 + j g/2, Z)``."""
    g = n // math.gcd(math.gcd(l % n, m % n), n)
    offsets = [g / 8 + j * g / 2 for j in (0, 1)]
    distance = min(abs(o - round(o)) for o in offsets)
    return 2 * math.sqrt(2) * math.cos(2 * math.pi / g * distance)


@pytest.mark.parametrize(("l", "m", "hw"), [
    (0, 0, (28, 28)), (1, 0, (28, 28)), (3, 5, (28, 28)), (7, 14, (28, 28)), (14, 14, (28, 28)),
    (27, 1, (28, 28)), (1, 2, (8, 8)), (2, 3, (6, 10)), (1, 1, (7, 9)),
])
def test_eq6_scale_is_equation_6_term_by_term(l: int, m: int, hw: tuple[int, int]) -> None:
    literal = eq6_literal(l, m, *hw, EPS)
    assert np.abs(literal.imag).max() < 1e-9  # the conjugate pair makes it real
    p = sfa_perturbation(l, m, hw, EPS, dtype=torch.float64, scale="eq6")
    np.testing.assert_allclose(p.numpy(), literal.real, atol=1e-12)
    # peak (default) is the same mode rescaled to max |P| = eps
    peak = sfa_perturbation(l, m, hw, EPS, dtype=torch.float64)
    np.testing.assert_allclose(peak.numpy(), EPS * literal.real / np.abs(literal.real).max(), atol=1e-12)


@pytest.mark.parametrize(("l", "m", "n", "expected"), [
    (0, 0, 28, 2.0),  # DC: P = 2 everywhere
    (14, 0, 28, 2.0), (7, 21, 28, 2.0),  # phases step by a half or a quarter period
    (1, 0, 28, 2 * math.sqrt(2) * math.cos(math.pi / 28)),
    (3, 5, 28, 2 * math.sqrt(2) * math.cos(math.pi / 28)),
    (4, 0, 28, 2 * math.sqrt(2) * math.cos(math.pi / 28)),  # g = 7
    (1, 0, 8, 2 * math.sqrt(2)),  # the phase pi/4 is on the grid
    (1, 0, 3, 2 * math.sqrt(2) * math.cos(math.pi / 12)),
    (2, 1, 10, None), (5, 9, 32, None), (3, 0, 12, None),
])
def test_eq6_peak_matches_the_closed_form(l: int, m: int, n: int, expected: float | None) -> None:
    closed = eq6_peak_over_eps(l, m, n)
    if expected is not None:
        assert closed == pytest.approx(expected, rel=1e-12)
    assert 2.0 - 1e-12 <= closed <= 2 * math.sqrt(2) + 1e-12
    p = sfa_perturbation(l, m, (n, n), EPS, dtype=torch.float64, scale="eq6")
    assert p.abs().max().item() == pytest.approx(closed * EPS, rel=1e-12)
    assert np.abs(eq6_literal(l, m, n, n, EPS).real).max() == pytest.approx(closed * EPS, rel=1e-12)


def test_column_stacked_vec_swaps_l_and_m() -> None:
    """Under Eq. (4)'s vec (columns stacked, Fortran order) the paper's (l, m) is
    robeval's (m, l): the heat map transposes, Avg and Min do not change."""
    n = 12
    for l, m in [(1, 3), (5, 2), (0, 7)]:
        paper = eq6_literal(l, m, n, n, EPS).reshape(-1).reshape(n, n, order="F").real
        robeval_mode = sfa_perturbation(m, l, (n, n), EPS, dtype=torch.float64, scale="eq6")
        np.testing.assert_allclose(robeval_mode.numpy(), paper, atol=1e-12)


def test_sfa_attack_eq6_needs_norm_scale(digits_model, digits_test) -> None:
    x, y = digits_test
    with pytest.raises(RobevalError, match="norm=scale"):
        get("sfa:scale=eq6")
    with pytest.raises(RobevalError, match="norm=linf"):
        get("sfa:norm=scale")
    with pytest.raises(RobevalError, match="peak, eq6"):
        get("sfa:scale=l2,norm=scale")
    attack = get("sfa:l=1,m=2,scale=eq6,norm=scale")
    out = attack(digits_model, x, y, eps=EPS)
    p = sfa_perturbation(1, 2, (8, 8), EPS, scale="eq6")
    assert torch.equal(out, (x + p).clamp(0, 1))
    # The runner refuses it as an L-inf attack (its peak is above eps) and accepts it as a scale attack.
    with pytest.raises(AttackContractError, match="budget"):
        attack_norms(x, out, eps=EPS, norm="linf", attack="sfa")
    attack_norms(x, out, eps=EPS, norm=attack.norm, attack="sfa")
    assert torch.equal(get("sfa:l=1,m=2")(digits_model, x, y, eps=EPS),
                       (x + sfa_perturbation(1, 2, (8, 8), EPS)).clamp(0, 1))


def test_sfa_grid_eq6_agrees_with_the_attack(digits_model, digits_test) -> None:
    x, y = digits_test
    modes = [(0, 0), (1, 2), (4, 4), (3, 7)]
    frame = sfa_grid(digits_model, x, y, eps=EPS / 3, modes=modes, scale="eq6")
    assert frame.attrs["scale"] == "eq6"
    with torch.no_grad():
        for (l, m), acc in zip(modes, frame["accuracy"], strict=True):
            x_adv = get("sfa", l=l, m=m, scale="eq6", norm="scale")(digits_model, x, y, eps=EPS / 3)
            assert (digits_model(x_adv).argmax(1) == y).double().mean().item() == pytest.approx(acc)
    peak = sfa_grid(digits_model, x, y, eps=EPS / 3, modes=modes)
    assert peak.attrs["scale"] == "peak"


def _smooth_images() -> torch.Tensor:
    """Mid-grey images in [0.25, 0.75] with detail at every frequency: small enough
    that no shift pushes them out of [0, 1] (the equalities below would fail if the clip
    acted)."""
    return 0.5 + 0.25 * (2 * torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) - 1)


def test_highpass_shifts_are_the_high_pass_part_plus_a_constant() -> None:
    x = _smooth_images()
    radius = 4.0
    high = highpass(x, radius)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    assert high.mean(dim=(-2, -1)).abs().max() < 1e-6  # zero mean: half of it below 0
    # mean: the DC term kept, i.e. x without the frequencies 0 < d <= r
    assert torch.allclose(highpass_image(x, radius, "mean"), x - lowpass(x, radius) + mean, atol=1e-6)
    assert torch.allclose(highpass_image(x, radius, "mean").mean(dim=(-2, -1)), mean.squeeze(), atol=1e-6)
    assert torch.allclose(highpass_image(x, radius, "grey"), high + 0.5, atol=1e-6)
    zero = highpass_image(x, radius, "zero")
    assert torch.equal(zero, high.clamp(0, 1))
    assert 0.3 < (zero == 0).double().mean().item() < 0.7  # the clip drops about half
    with pytest.raises(ValueError, match="shift"):
        highpass_image(x, radius, "none")


def test_highpass_attack_default_keeps_the_image_mean(digits_model, digits_test) -> None:
    x, y = digits_test
    default, zero, grey = get("highpass:radius=1.5"), get("highpass:radius=1.5,shift=zero"), get("highpass:shift=grey")
    assert default.shift == "mean" and default.norm == "scale"
    out = default(digits_model, x, y, eps=0.3)
    assert torch.equal(out, highpass_image(x, 1.5, "mean")) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(zero(digits_model, x, y, eps=0.3), highpass(x, 1.5).clamp(0, 1))
    assert torch.equal(grey(digits_model, x, y, eps=0.3), highpass_image(x, 4.0, "grey"))
    assert torch.equal(default(digits_model, x, y, eps=0), x)
    # The zero shift loses about half the high-pass image; the mean shift loses little.
    high = highpass(x, 1.5)
    lost = {s: ((high + off) - highpass_image(x, 1.5, s)).abs().sum() / high.abs().sum()
            for s, off in [("zero", 0.0), ("mean", x.mean(dim=(-2, -1), keepdim=True))]}
    assert lost["zero"] > 0.4 and lost["mean"] < lost["zero"] / 2
    with pytest.raises(RobevalError, match="mean, grey, zero"):
        get("highpass:shift=clip")
