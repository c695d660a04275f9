"""The frequency analysis' optional clipping (local-response-differences Sec. 3.1, Fig. 1
and Appendix A, Fig. 6: the paper describes no clipping of the filtered images), and the
helpers the paper script uses: spectra of given adversarials, band means, batched local
responses and the Fig. 1 / Fig. 2 panels."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from robeval.analysis.frequency import COLUMNS, frequency_sweep, make_adversarials, plot_frequency_figure
from robeval.analysis.responses import batched_response_samples, resolve_layers, response_samples
from robeval.analysis.spectrum import (
    compare_spectra,
    plot_spectra,
    radial_band_mean,
    spectrum_analysis,
)
from robeval.attacks.fourier import frequency_swap, highpass, lowpass


class Recording(nn.Module):
    """A model that keeps a copy of every batch it is fed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.fixture(scope="module")
def digits_fgsm(digits_model, digits_test):
    x, y = digits_test[0][:64], digits_test[1][:64]
    return x, y, make_adversarials(digits_model, x, y, "fgsm", 0.1)


def test_unclipped_highpass_plus_lowpass_is_the_image(digits_model, digits_fgsm) -> None:
    """With the default, the model is fed the raw filters: the high-pass input it sees
    plus the low-pass input is the image itself (Absum Eq. 18 + Eq. 19), and the
    high-pass input is zero-mean with negative entries (not clipped)."""
    x, y, x_adv = digits_fgsm
    recorder = Recording(digits_model)
    frequency_sweep(recorder, x, y, x_adv, [2.0], batch_size=len(x))
    low_x, high_x, low_adv, high_adv, swap_nat, swap_adv = recorder.inputs  # one batch per column
    assert torch.allclose(low_x + high_x, x, atol=1e-5) and torch.allclose(low_adv + high_adv, x_adv, atol=1e-5)
    assert torch.allclose(high_x.double().mean(dim=(-2, -1)), torch.zeros(x.shape[:2], dtype=torch.float64),
                          atol=1e-6)
    assert float(high_x.min()) < -0.05 and float((high_x < 0).double().mean()) > 0.2
    assert torch.allclose(swap_nat, low_x + high_adv, atol=1e-5)  # natural low + adversarial high
    assert torch.allclose(swap_adv, low_adv + high_x, atol=1e-5)


def _reference_clipped(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, radii: list[float]) -> pd.DataFrame:
    """The sweep as robeval computed it before the option: every image clamped to [0, 1]."""
    def acc(images: Tensor) -> float:
        with torch.no_grad():
            return float((model(images.clamp(0, 1)).argmax(1) == y).double().mean())

    rows = [{"radius": r, "natural_lowpass_acc": acc(lowpass(x, r)), "natural_highpass_acc": acc(highpass(x, r)),
             "adversarial_lowpass_acc": acc(lowpass(x_adv, r)), "adversarial_highpass_acc": acc(highpass(x_adv, r)),
             "low_natural_high_adv_acc": acc(frequency_swap(x, x_adv, r)),
             "low_adv_high_natural_acc": acc(frequency_swap(x_adv, x, r))} for r in radii]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_clip_on_reproduces_the_clipped_sweep(digits_model, digits_fgsm) -> None:
    x, y, x_adv = digits_fgsm
    radii = [0.0, 2.0, 3.5]
    clipped = frequency_sweep(digits_model, x, y, x_adv, radii, batch_size=40, clip=True)
    pd.testing.assert_frame_equal(clipped, _reference_clipped(digits_model, x, y, x_adv, radii))
    assert clipped.attrs["clip"] is True
    recorder = Recording(digits_model)
    frequency_sweep(recorder, x, y, x_adv, [2.0], batch_size=len(x), clip=True)
    assert all(float(batch.min()) >= 0 and float(batch.max()) <= 1 for batch in recorder.inputs)


def test_default_is_unclipped(digits_model, digits_fgsm) -> None:
    x, y, x_adv = digits_fgsm
    assert inspect.signature(frequency_sweep).parameters["clip"].default is False
    radii = [1.0, 3.0]
    default = frequency_sweep(digits_model, x, y, x_adv, radii)
    pd.testing.assert_frame_equal(default, frequency_sweep(digits_model, x, y, x_adv, radii, clip=False))
    assert default.attrs["clip"] is False
    clipped = frequency_sweep(digits_model, x, y, x_adv, radii, clip=True)
    # clipping changes what the model sees on high-pass images, so it changes some accuracy
    assert not np.allclose(default[list(COLUMNS[1:])].to_numpy(), clipped[list(COLUMNS[1:])].to_numpy())


def test_compare_spectra_matches_spectrum_analysis(digits_model, digits_test) -> None:
    x, y = digits_test[0][:48], digits_test[1][:48]
    attacked = spectrum_analysis(digits_model, x, y, "pgd:steps=5,random_start=false", 0.1)
    x_adv = make_adversarials(digits_model, x, y, "pgd:steps=5,random_start=false", 0.1)  # deterministic
    again = compare_spectra(x, x_adv, attack=attacked.attack, eps=0.1)
    for field in ("clean", "adversarial", "difference", "perturbation"):
        assert np.allclose(getattr(again, field), getattr(attacked, field))
    assert np.isnan(again.clean_accuracy) and again.n == 48
    with pytest.raises(ValueError, match="differ in shape"):
        compare_spectra(x, x_adv[:5], attack="pgd", eps=0.1)


def test_radial_band_mean_closed_form() -> None:
    values = np.zeros((8, 8))
    rows, cols = np.meshgrid(np.arange(8) - 4, np.arange(8) - 4, indexing="ij")
    distance = np.hypot(rows, cols)
    values[distance > 2] = 3.0  # a "high-frequency" plateau
    values[4, 4] = -8.0  # the DC term
    assert radial_band_mean(values, 2.0, np.inf) == 3.0
    inner = distance <= 2
    assert radial_band_mean(values, -1.0, 2.0) == pytest.approx(-8.0 / inner.sum())
    assert radial_band_mean(values, 0.0, 2.0) == 0.0  # DC excluded
    assert np.isnan(radial_band_mean(values, 10.0, 11.0))


def test_batched_responses_equal_one_batch(digits_model, digits_fgsm) -> None:
    x, y, x_adv = digits_fgsm
    layers = resolve_layers(digits_model)
    whole = response_samples(digits_model, layers, x, y, x_adv, origin="own")
    batched = batched_response_samples(digits_model, layers, x, y, x_adv, origin="own", batch_size=10)
    batched = batched.sort_values(["layer", "index"], kind="stable").reset_index(drop=True)
    whole = whole.assign(index=whole.groupby("layer").cumcount()).sort_values(["layer", "index"], kind="stable")
    whole = whole.reset_index(drop=True)
    for column in ("label", "clean_pred", "adv_pred", "index"):
        assert (batched[column].to_numpy() == whole[column].to_numpy()).all()
    assert np.allclose(batched["max_abs"], whole["max_abs"]) and np.allclose(batched["total_abs"], whole["total_abs"])
    with pytest.raises(ValueError, match="do not match"):
        batched_response_samples(digits_model, layers, x, y[:3], x_adv, origin="own")


def test_figures_write_png(digits_model, digits_fgsm, tmp_path: Path) -> None:
    x, y, x_adv = digits_fgsm
    frame = frequency_sweep(digits_model, x[:16], y[:16], x_adv[:16], [0, 3, 6])
    png = plot_frequency_figure({"A": frame, "B": frame}, tmp_path / "fig1.png", half_size=4)
    spectrum = compare_spectra(x, x_adv, attack="fgsm", eps=0.1)
    png2 = plot_spectra({"A": spectrum, "B": spectrum}, tmp_path / "fig2.png")
    for path in (png, png2):
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
