"""Figures that must not mislead (issue 12): the SFA heat map's colours follow the data's
own range, the spectra have labelled axes, and the norm curves' legend covers no curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from robeval.analysis.sfa_grid import plot_sfa_grid, sfa_grid_figure
from robeval.analysis.spectrum import Spectrum, frequency_extent, spectrum_figure, write_spectrum
from robeval.results.plots import norm_curves_figure, plot_norm_curves

PNG = b"\x89PNG\r\n\x1a\n"


def _sfa_frame(accuracy: np.ndarray) -> pd.DataFrame:
    side = int(np.sqrt(accuracy.size))
    frame = pd.DataFrame({"l": np.repeat(np.arange(side), side), "m": np.tile(np.arange(side), side),
                          "accuracy": accuracy.ravel()})
    frame.attrs.update(eps=0.1, n=500, clean_accuracy=0.97)
    return frame


@pytest.mark.parametrize("accuracy", [
    pytest.param(np.linspace(0.93, 0.96, 64), id="sfa-grid-between-93-and-96-percent"),
    pytest.param(np.linspace(0.0, 1.0, 16), id="sfa-grid-from-0-to-100-percent"),
    pytest.param(np.r_[np.full(15, 0.5), 0.52], id="sfa-grid-nearly-flat"),
])
def test_sfa_heat_map_colours_span_the_data(tmp_path: Path, accuracy: np.ndarray) -> None:
    frame = _sfa_frame(np.random.default_rng(0).permutation(accuracy))
    fig = sfa_grid_figure(frame)
    heat = fig.axes[0].images[0]
    assert heat.get_clim() == pytest.approx((100 * accuracy.min(), 100 * accuracy.max()))
    colorbar = fig.axes[1]
    assert colorbar.get_ylabel() == "accuracy (%)"
    shown = heat.get_array()
    assert float(shown.max() - shown.min()) == pytest.approx(100 * (accuracy.max() - accuracy.min()))
    plt.close(fig)
    assert plot_sfa_grid(frame, tmp_path / "sfa.png").read_bytes()[:8] == PNG


def test_flat_sfa_grid_still_gets_a_colour_scale() -> None:
    fig = sfa_grid_figure(_sfa_frame(np.full(16, 0.9)))
    low, high = fig.axes[0].images[0].get_clim()
    assert low < 90 < high
    plt.close(fig)


def _spectrum(side: int) -> Spectrum:
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(side, side))
    return Spectrum(clean=clean, adversarial=clean + 0.1, difference=np.full((side, side), 0.1),
                    perturbation=rng.random((side, side)), attack="pgd", eps=0.3, n=10, clean_accuracy=0.9,
                    adversarial_accuracy=0.1)


@pytest.mark.parametrize("side", [8, 7], ids=["spectrum-even-side", "spectrum-odd-side"])
def test_spectrum_panels_have_axis_labels_in_cycles_per_pixel(tmp_path: Path, side: int) -> None:
    spectrum = _spectrum(side)
    fig = spectrum_figure(spectrum)
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert len(panels) == 4
    for ax in panels:
        assert "frequency" in ax.get_xlabel() and "frequency" in ax.get_ylabel(), ax.get_title()
    colour_bars = [ax for ax in fig.axes if ax not in panels]
    assert len(colour_bars) == 4 and all(ax.get_ylabel() for ax in colour_bars)
    plt.close(fig)
    left, right, bottom, top = frequency_extent(side, side)
    assert (right - left) == pytest.approx(1.0) and (bottom - top) == pytest.approx(1.0)
    assert (left + 0.5 / side) == pytest.approx(-(side // 2) / side), "the DC term sits at frequency 0"
    png, npz = write_spectrum(spectrum, tmp_path)
    assert png.read_bytes()[:8] == PNG and npz.exists()


def _curves(pairs: list[tuple[str, str]], norms: dict[tuple[str, str], tuple[str, ...]] | None = None) -> pd.DataFrame:
    rows = []
    for model, attack in pairs:
        for norm, scale in (("l0", 60.0), ("l2", 4.0), ("linf", 0.4)):
            if norms and norm not in norms.get((model, attack), (norm,)):
                continue
            bounds = np.linspace(0, scale, 30)
            accuracy = np.exp(-3 * bounds / scale)  # starts at 100 % top left, where legends go
            rows += [{"model": model, "attack": attack, "norm": norm, "bound": b, "robust_acc": a}
                     for b, a in zip(bounds, accuracy, strict=True)]
    return pd.DataFrame(rows)


PAIRS = [("mnist_cnn", "deepfool:norm=linf"), ("mnist_cnn", "cw:norm=l2"),
         ("mnist_cnn_absum_with_a_long_name", "deepfool:norm=linf"), ("mnist_cnn_absum_with_a_long_name", "cw:norm=l2")]


@pytest.mark.parametrize("pairs", [PAIRS[:1], PAIRS], ids=["norm-curves-one-line", "norm-curves-four-long-labels"])
def test_norm_curves_legend_covers_no_curve(tmp_path: Path, pairs: list[tuple[str, str]]) -> None:
    fig = norm_curves_figure(_curves(pairs))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert fig.legends, "the legend is there"
    box = fig.legends[0].get_window_extent(renderer)
    assert len(fig.legends[0].get_texts()) == len(pairs)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend lies over a panel"
        assert ax.get_legend() is None
    plt.close(fig)
    assert plot_norm_curves(_curves(pairs), tmp_path / "norm_curves.png").read_bytes()[:8] == PNG


def test_norm_curves_keep_one_colour_per_line_across_panels() -> None:
    """A pair missing from one panel must not shift the colours of the others there."""
    curves = _curves(PAIRS[:2], norms={PAIRS[0]: ("l2", "linf"), PAIRS[1]: ("l0", "l2", "linf")})
    fig = norm_curves_figure(curves)
    colours = {ax.get_xlabel(): {line.get_label(): line.get_color() for line in ax.get_lines()} for ax in fig.axes}
    label = f"{PAIRS[1][0]} · {PAIRS[1][1]}"
    assert len({panel[label] for panel in colours.values()}) == 1
    legend = {text.get_text(): handle.get_color() for text, handle in
              zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles, strict=True)}
    assert legend[label] == colours[next(iter(colours))][label]
    plt.close(fig)
