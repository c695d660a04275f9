"""Smoothness of convolution kernels: the per-layer statistics and the kernel / spectrum
figure of Wang, Wu, Chen, Xing, "Smooth Kernels Improve Adversarial Robustness and
Perceptually-Aligned Gradients" (smooth-kernels Sec. 3 and Fig. 1), used by the
local-response-differences paper (Secs. 4.2-4.4: adversarially trained models have
smoother kernels, and smoother kernels give smaller local response differences).

Every statistic is computed per 2-D ``kh x kw`` slice ``w = weight[o, i]`` of a conv
layer (the paper's regulariser works "only through these two dimensions, broadcasting
the operation through the channels") and averaged over the ``out * in`` slices:

* ``roughness``: ``sum over unordered 8-neighbour pairs (w_ij - w_hk)^2``
  (:func:`robeval.train.reg_smooth.neighbour_sq_diffs`, exactly as the regulariser);
* ``energy``: ``sum_ij w_ij^2``;
* ``relative_roughness``: ``roughness / energy``, scale-free (``w`` and ``3 w`` agree),
  0 for constant kernels, and 0 by definition for an all-zero kernel;
* ``log_r``: ``roughness - energy``, the exponent of the regulariser's ``R(w)``;
* ``high_freq_fraction``: the share of the kernel's DFT power (zero-padded to
  ``fft_size``) at radial frequencies above a quarter cycle per pixel, i.e. outside the
  radius ``fft_size / 4`` of the centred spectrum (half the Nyquist frequency).

``high_freq_fraction`` and zero-padding: the padded DFT samples the kernel's transfer
function, the factor by which the convolution weighs each image frequency
(smooth-kernels Sec. 3, argument 2, the Convolution Theorem); ``fft_size = 16`` samples
it on a grid fine enough for 3x3 to 7x7 kernels and to draw (Fig. 1, second row). A 3x3
kernel is a short filter, so even a constant (box) kernel leaks: its transfer function
``sin(3 pi f) / (3 sin(pi f))`` per axis has its first zero at ``f = 1/3 > 1/4`` and
gives ``high_freq_fraction ~ 0.19`` (0.15 for 5x5, 0.09 for 7x7); a checkerboard gives
``~ 0.99``. ``fft_size=None`` uses the kernel's own grid (no padding: the Fourier-series
view of argument 1), where a constant kernel gives exactly 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.patches import Ellipse
from torch import Tensor, nn

from robeval.results.plots import save_figure
from robeval.train.reg_smooth import neighbour_sq_diffs
from robeval.train.regularisers import conv_layers

#: Default DFT size (zero-padding) of kernel spectra; see the module docstring.
FFT_SIZE = 16
#: Radial frequency, in cycles per pixel, above which power counts as high-frequency
#: (``fft_size / 4`` bins on an ``fft_size`` grid; half the Nyquist frequency 0.5).
HIGH_FREQ_CUTOFF = 0.25

STAT_COLUMNS = ("roughness", "energy", "relative_roughness", "log_r", "high_freq_fraction")


def _spatial(conv: nn.Conv2d) -> bool:
    return conv.weight.shape[-2] * conv.weight.shape[-1] > 1


def centred_spectrum(weight: Tensor, fft_size: int | None = FFT_SIZE) -> Tensor:
    """``|fftshift(fft2(w))|`` of every 2-D kernel of ``weight`` (``(..., kh, kw)``),
    zero-padded to ``max(fft_size, kh) x max(fft_size, kw)`` (``None``: no padding),
    float64; the DC term sits at ``(n // 2, n // 2)`` (smooth-kernels Fig. 1, second row)."""
    kh, kw = weight.shape[-2:]
    size = (kh, kw) if fft_size is None else (max(fft_size, kh), max(fft_size, kw))
    spectrum = torch.fft.fft2(weight.detach().double(), s=size)
    return torch.fft.fftshift(spectrum, dim=(-2, -1)).abs()


def high_freq_fraction(weight: Tensor, fft_size: int | None = FFT_SIZE) -> Tensor:
    """Per 2-D kernel (shape ``(...)``): the share of DFT power at radial frequency above
    :data:`HIGH_FREQ_CUTOFF` cycles per pixel (smooth-kernels Sec. 3, argument 1: a
    smooth kernel has negligible high-frequency components). 0 for an all-zero kernel."""
    power = centred_spectrum(weight, fft_size).pow(2)
    rows, cols = power.shape[-2:]
    fy = (torch.arange(rows, dtype=torch.float64) - rows // 2) / rows
    fx = (torch.arange(cols, dtype=torch.float64) - cols // 2) / cols
    high = (fy[:, None].pow(2) + fx[None, :].pow(2)).sqrt() > HIGH_FREQ_CUTOFF
    total = power.sum((-2, -1))
    fraction = (power * high).sum((-2, -1)) / total.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(total > 0, fraction, torch.zeros_like(fraction))


def kernel_values(weight: Tensor, fft_size: int | None = FFT_SIZE) -> dict[str, Tensor]:
    """The per-kernel statistics of the module docstring, each of shape ``weight.shape[:-2]``."""
    w = weight.detach().double()
    roughness = neighbour_sq_diffs(w, 8)
    energy = w.pow(2).sum((-2, -1))
    relative = torch.where(energy > 0, roughness / energy.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return {"roughness": roughness, "energy": energy, "relative_roughness": relative,
            "log_r": roughness - energy, "high_freq_fraction": high_freq_fraction(w, fft_size)}


def kernel_statistics(model: nn.Module, *, fft_size: int | None = FFT_SIZE) -> pd.DataFrame:
    """One row per ``nn.Conv2d`` with a spatial kernel larger than 1x1 (1x1 kernels have
    no neighbours and no spatial spectrum), in module order: ``layer`` (qualified name),
    ``shape`` ``(out, in/groups, kh, kw)``, ``kernels`` (number of 2-D kernels) and the
    mean over the 2-D kernels of every column in :data:`STAT_COLUMNS`."""
    rows = []
    for name, conv in conv_layers(model):
        if not _spatial(conv):
            continue
        values = kernel_values(conv.weight, fft_size)
        row: dict[str, object] = {"layer": name, "shape": tuple(int(s) for s in conv.weight.shape),
                                  "kernels": int(conv.weight.shape[0] * conv.weight.shape[1])}
        row.update({key: float(value.mean()) for key, value in values.items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=["layer", "shape", "kernels", *STAT_COLUMNS])


def model_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model (one row per ``model`` value, or a single row without that column): the
    number of layers and 2-D kernels and the *simple mean over layers* of every
    statistic. Each layer counts once, so the few first-layer kernels the papers draw
    (smooth-kernels Fig. 1) weigh as much as a deep layer's thousands; weighting by
    kernel count or energy would let the widest or largest-weight layer dominate."""
    groups = frame.groupby("model", sort=False) if "model" in frame.columns else [(None, frame)]
    rows = []
    for model, part in groups:
        row: dict[str, object] = {} if model is None else {"model": model}
        row.update({"layers": len(part), "kernels": int(part["kernels"].sum())})
        row.update({key: float(part[key].mean()) if len(part) else float("nan") for key in STAT_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows)


def compare_kernels(models: list[tuple[str, nn.Module]], *, fft_size: int | None = FFT_SIZE) -> pd.DataFrame:
    """:func:`kernel_statistics` of every ``(name, model)``, stacked with a ``model``
    column first (local-response-differences Sec. 4.3: standard vs adversarially trained
    models; smooth-kernels Fig. 1: V, VR, VH, ...)."""
    parts = []
    for name, model in models:
        frame = kernel_statistics(model, fft_size=fft_size)
        frame.insert(0, "model", name)
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=["model", "layer", "shape", "kernels", *STAT_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def _pick_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Conv2d]:
    layers = [(name, conv) for name, conv in conv_layers(model) if _spatial(conv)]
    if layer is None:
        if not layers:
            raise ValueError("the model has no Conv2d layer with a kernel larger than 1x1")
        return layers[0]
    for name, conv in conv_layers(model):
        if name == layer:
            return name, conv
    raise ValueError(f"no Conv2d layer named {layer!r}; layers: {', '.join(n for n, _ in conv_layers(model))}")


def _grey(image: Tensor) -> Tensor:
    """``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` -> ``(1, 1, H, W)``, channel mean."""
    x = image.detach().double().cpu()
    if x.dim() == 4:
        x = x[0]
    if x.dim() == 3:
        x = x.mean(0)
    if x.dim() != 2:
        raise ValueError(f"image must be (H, W), (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    return x[None, None]


def kernel_figure(
    model: nn.Module, *, layer: str | None = None, count: int = 4, image: Tensor | None = None,
    fft_size: int | None = FFT_SIZE,
) -> plt.Figure:
    """The figure of :func:`plot_kernels` (not saved; the caller closes it)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    name, conv = _pick_layer(model, layer)
    weight = conv.weight.detach().double().cpu()
    # Multi-input-channel kernels: the mean over input channels, the effective kernel on a
    # grey image (every input channel equal) up to the factor in_channels.
    kernels = weight.mean(1)[:count]
    spectra = centred_spectrum(kernels, fft_size).numpy()
    count = len(kernels)
    rows = 2 if image is None else 3
    fig, axes = plt.subplots(rows, count, figsize=(2.4 * count, 2.3 * rows), squeeze=False)
    bound = float(kernels.abs().max()) or 1.0
    top = float(spectra.max()) or 1.0
    channels = "" if weight.shape[1] == 1 else f", mean over {weight.shape[1]} input channels"
    responses = None
    if image is not None:
        kh, kw = kernels.shape[-2:]
        responses = F.conv2d(_grey(image), kernels[:, None], padding=(kh // 2, kw // 2))[0].numpy()
    for k in range(count):
        panels = [(kernels[k].numpy(), f"kernel {k}", {"cmap": "bwr", "vmin": -bound, "vmax": bound}),
                  (spectra[k], f"|DFT| kernel {k}", {"cmap": "viridis", "vmin": 0.0, "vmax": top})]
        if responses is not None:
            panels.append((responses[k], f"response {k}", {"cmap": "gray"}))
        for row, (values, title, style) in enumerate(panels):
            ax = axes[row][k]
            shown = ax.imshow(values, interpolation="nearest", **style)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
            if row == 1:  # the high_freq_fraction boundary: radius HIGH_FREQ_CUTOFF cycles/pixel
                n_rows, n_cols = values.shape
                ax.add_patch(Ellipse((n_cols // 2, n_rows // 2), 2 * HIGH_FREQ_CUTOFF * n_cols,
                                     2 * HIGH_FREQ_CUTOFF * n_rows, fill=False, color="white", lw=0.8, ls="--"))
    size = "no padding" if fft_size is None else f"zero-padded to {max(fft_size, *kernels.shape[-2:])}"
    fig.suptitle(f"{name} {tuple(weight.shape)}{channels}\n|DFT| centred (DC in the middle), "
                 f"{size}; dashed: high-frequency boundary",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_kernels(
    model: nn.Module, path: Path | str, *, layer: str | None = None, count: int = 4, image: Tensor | None = None,
    fft_size: int | None = FFT_SIZE,
) -> Path:
    """smooth-kernels Fig. 1 as a PNG: the first ``count`` 2-D kernels of the first conv
    layer with a spatial kernel (or of ``layer``, a qualified module name) in the first
    row (diverging colours centred at 0, one scale for the row), their centred ``|DFT|``
    (``fftshift``, zero-padded to ``fft_size``, one scale for the row) in the second,
    and, when ``image`` is given, in a third row each kernel's response to it (the
    image's channel mean, as given, with no normalisation, bias or activation; zero
    padding keeps the size). Multi-input-channel kernels are shown as their mean over
    input channels. The figure is ``2.4 * count`` by ``2.3 * rows`` inches at 110 dpi."""
    fig = kernel_figure(model, layer=layer, count=count, image=image, fft_size=fft_size)
    return save_figure(fig, Path(path))


__all__ = ["FFT_SIZE", "HIGH_FREQ_CUTOFF", "STAT_COLUMNS", "centred_spectrum", "compare_kernels", "high_freq_fraction",
           "kernel_figure", "kernel_statistics", "kernel_values", "model_summary", "plot_kernels"]
