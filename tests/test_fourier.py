"""Fourier attacks: the single Fourier attack (Absum Eq. 6), the radial low-/high-pass
filters (High-Frequency attack, Absum Eqs. 18-19) and frequency swapping
(local-response-differences Fig. 1(c, d)); the SFA grid of Absum Table 1."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import robeval.attacks.fourier  # noqa: F401  (registers sfa, lowpass, highpass)
from robeval.analysis.sfa_grid import plot_sfa_grid, sfa_grid, sfa_summary
from robeval.attacks import get
from robeval.attacks.base import is_nested
from robeval.attacks.fourier import frequency_swap, highpass, lowpass, sfa_perturbation

EPS = 80 / 255


def _support(p: torch.Tensor) -> set[tuple[int, int]]:
    spectrum = torch.fft.fft2(p.double()).abs()
    return {tuple(idx) for idx in (spectrum > 1e-5 * spectrum.max()).nonzero().tolist()}


@pytest.mark.parametrize(("l", "m", "hw"), [
    (0, 0, (8, 8)), (4, 0, (8, 8)), (0, 4, (8, 8)), (4, 4, (8, 8)), (1, 2, (8, 8)), (3, 7, (8, 8)),
    (7, 1, (8, 8)), (2, 3, (6, 10)), (3, 5, (6, 10)), (1, 1, (7, 9)), (13, 0, (28, 28)),
])
def test_sfa_perturbation_is_real_eps_sized_and_single_frequency(l: int, m: int, hw: tuple[int, int]) -> None:
    p = sfa_perturbation(l, m, hw, EPS, dtype=torch.float64)
    assert p.shape == hw and not p.is_complex()
    assert p.abs().max().item() == pytest.approx(EPS, rel=1e-12)
    height, width = hw
    expected = {(l % height, m % width), ((height - l) % height, (width - m) % width)}
    assert _support(p) == expected
    # Eq. (6) literally: eps * ((1+j) F_l (x) F_m + (1-j) F_{n-l} (x) F_{n-m}), rescaled.
    a = torch.arange(height, dtype=torch.float64).view(-1, 1)
    b = torch.arange(width, dtype=torch.float64).view(1, -1)
    basis = torch.exp(-2j * math.pi * (l * a / height + m * b / width))
    conj = torch.exp(-2j * math.pi * ((height - l) * a / height + (width - m) * b / width))
    literal = (1 + 1j) * basis + (1 - 1j) * conj
    assert literal.imag.abs().max() < 1e-9
    assert torch.allclose(p, EPS * literal.real / literal.real.abs().max(), atol=1e-12)


def test_sfa_edge_cases_are_constant_or_nyquist() -> None:
    assert torch.allclose(sfa_perturbation(0, 0, (8, 8), 0.1, dtype=torch.float64), torch.full((8, 8), 0.1,
                                                                                                dtype=torch.float64))
    checker = sfa_perturbation(4, 4, (8, 8), 0.1, dtype=torch.float64)
    assert torch.allclose(checker.abs(), torch.full((8, 8), 0.1, dtype=torch.float64))
    assert checker[0, 0] > 0 and checker[0, 1] < 0 and checker[1, 0] < 0 and checker[1, 1] > 0
    float32 = sfa_perturbation(1, 2, (8, 8), EPS)
    assert float32.dtype == torch.float32 and float32.abs().max().item() == pytest.approx(EPS, rel=1e-6)


def test_lowpass_identity_dc_and_complement() -> None:
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lowpass(x, math.hypot(8, 8) / 2), x, atol=1e-6)
    means = x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    assert torch.allclose(lowpass(x, 0), means, atol=1e-6)
    for radius in (0.0, 1.0, 2.5, 4.0, 6.0):
        assert torch.allclose(lowpass(x, radius) + highpass(x, radius), x, atol=1e-6)
    odd = torch.rand(2, 1, 7, 9, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(lowpass(odd, math.hypot(7, 9) / 2), odd, atol=1e-6)
    assert torch.allclose(lowpass(odd, 0), odd.mean(dim=(-2, -1), keepdim=True).expand_as(odd), atol=1e-6)
    assert torch.allclose(highpass(x, 100.0), torch.zeros_like(x), atol=1e-6)
    assert not torch.allclose(lowpass(x, 2.0), x, atol=1e-3)  # something is removed in between


def test_frequency_swap() -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = torch.rand(4, 3, 8, 8, generator=gen), torch.rand(4, 3, 8, 8, generator=gen)
    assert torch.allclose(frequency_swap(a, a, 2.0), a, atol=1e-6)
    assert torch.allclose(frequency_swap(a, b, 0.0), a.mean((-2, -1), keepdim=True) + highpass(b, 0.0), atol=1e-6)
    assert torch.allclose(frequency_swap(a, b, 100.0), a, atol=1e-6)
    assert torch.allclose(frequency_swap(a, b, 3.0) + frequency_swap(b, a, 3.0), a + b, atol=1e-6)


def test_filter_attacks(digits_model, digits_test) -> None:
    x, y = digits_test
    low, high = get("lowpass"), get("highpass:radius=1.5")
    assert low.norm == high.norm == "scale" and not is_nested(low) and not is_nested(high)
    assert torch.equal(low(digits_model, x, y, eps=0), x)
    out = low(digits_model, x, y, eps=1.0)
    assert torch.allclose(out, lowpass(x, 4.0).clamp(0, 1)) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(high(digits_model, x, y, eps=0.3),  # shift=mean (default): the image's mean added back
                          (highpass(x, 1.5) + x.mean((-2, -1), keepdim=True)).clamp(0, 1), atol=1e-6)
    zero = get("highpass:radius=1.5,shift=zero")  # the behaviour before issue 14: clipped, half the image lost
    assert torch.allclose(zero(digits_model, x, y, eps=0.3), highpass(x, 1.5).clamp(0, 1))
    assert torch.allclose(get("lowpass:radius=6")(digits_model, x, y, eps=1.0), x, atol=1e-6)


def test_sfa_attack_single_and_grid(digits_model, digits_test) -> None:
    x, y = digits_test
    x0 = x.clone()
    sfa = get("sfa:l=1,m=2")
    assert sfa.norm == "linf" and not is_nested(sfa) and not sfa.minimal and not sfa.targeted
    x_adv = sfa(digits_model, x, y, eps=EPS)
    assert torch.equal(x_adv, (x + sfa_perturbation(1, 2, (8, 8), EPS)).clamp(0, 1))
    assert torch.equal(x, x0) and (x_adv - x).abs().max() <= EPS + 1e-6
    assert torch.equal(sfa(digits_model, x, y, eps=0), x)

    with torch.no_grad():
        grid_adv = get("sfa")(digits_model, x, y, eps=EPS)
        grid_fooled = digits_model(grid_adv).argmax(1) != y
        assert (grid_adv - x).abs().amax(dim=(1, 2, 3)).max() <= EPS + 1e-6
        for l, m in [(0, 0), (1, 2), (4, 4), (7, 3), (2, 6)]:
            single = get("sfa", l=l, m=m)(digits_model, x, y, eps=EPS)
            fooled = digits_model(single).argmax(1) != y
            assert bool((grid_fooled | ~fooled).all()), (l, m)  # every single-mode success is a grid success
    with pytest.raises(Exception, match="both"):
        get("sfa:l=1")


def test_sfa_grid_on_digits(digits_model, digits_test, tmp_path) -> None:
    x, y = digits_test
    frame = sfa_grid(digits_model, x, y, eps=EPS, batch_size=128)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["l", "m", "accuracy"]
    assert len(frame) == 8 * 8 and frame[["l", "m"]].drop_duplicates().shape[0] == 64
    summary = sfa_summary(frame)
    assert 0 <= summary["min"] <= summary["avg"] <= summary["max"] <= 1
    l, m = summary["argmin"]
    assert frame.set_index(["l", "m"]).loc[(l, m), "accuracy"] == summary["min"]
    # The single-mode attack agrees with the grid's accuracy at that mode.
    with torch.no_grad():
        single = get("sfa", l=l, m=m)(digits_model, x, y, eps=EPS)
        assert (digits_model(single).argmax(1) == y).double().mean().item() == pytest.approx(summary["min"])
        grid_adv = get("sfa")(digits_model, x, y, eps=EPS)
        assert (digits_model(grid_adv).argmax(1) == y).double().mean().item() <= summary["min"]
    sub = sfa_grid(digits_model, x, y, eps=EPS, modes=[(0, 0), (l, m)])
    assert len(sub) == 2 and sub["accuracy"].iloc[1] == summary["min"]
    path = plot_sfa_grid(frame, tmp_path / "sfa.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
