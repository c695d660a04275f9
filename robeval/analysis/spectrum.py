"""Average Fourier spectra of natural images, their adversarial examples and the
perturbations: local-response-differences Fig. 2 (average log-amplitude spectra of
natural and adversarial images and their difference ``log|adv| - log|nat|``) and Absum
Fig. 7 (power spectra of the perturbations, averaged over images and channels).

Every spectrum is the unnormalised 2-D DFT of each channel (``torch.fft.fft2``) shifted
so that the DC term sits at the centre ``(H // 2, W // 2)`` (``fftshift``) and the corners
are the highest frequencies, as both papers draw them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

import robeval.attacks.fourier  # noqa: F401  (registers sfa, lowpass, highpass for spec strings)
from robeval.atomic import atomic_open
from robeval.attacks import canonical_name
from robeval.attacks import get as get_attack
from robeval.attacks.base import Deformation
from robeval.device import resolve_device
from robeval.eval.runner import eval_mode
from robeval.results.plots import save_figure

#: Added to amplitudes before the logarithm so that exactly-zero frequencies (constant
#: images, exact single modes) give a finite ``log(1e-8) ~ -18.4`` instead of ``-inf``.
LOG_FLOOR = 1e-8

SPECTRUM_PNG = "spectrum.png"
SPECTRUM_NPZ = "spectrum.npz"


def _shifted_spectrum(x: Tensor) -> Tensor:
    return torch.fft.fftshift(torch.fft.fft2(x.detach().double()), dim=(-2, -1))


def average_log_amplitude(x: Tensor) -> Tensor:
    """``mean over images and channels of log(|fftshift(fft2(x))| + LOG_FLOOR)``, an
    ``(H, W)`` float64 tensor (local-response-differences Fig. 2: the average of the
    logarithmic amplitude, not the logarithm of the average amplitude; natural log)."""
    amplitude = _shifted_spectrum(x).abs()
    return torch.log(amplitude + LOG_FLOOR).reshape(-1, *x.shape[-2:]).mean(dim=0)


def average_power(x: Tensor) -> Tensor:
    """``mean over images and channels of |fftshift(fft2(x))|^2``, ``(H, W)`` float64:
    the power spectrum of Absum Fig. 7 (there of PGD perturbations)."""
    power = _shifted_spectrum(x).abs() ** 2
    return power.reshape(-1, *x.shape[-2:]).mean(dim=0)


@dataclass(frozen=True)
class Spectrum:
    """The spectra of one attack run (all ``(H, W)`` numpy float64 arrays).

    ``clean`` and ``adversarial``: average log-amplitude spectra of the natural and the
    adversarial images; ``difference = adversarial - clean`` (``log(|adv| / |nat|)`` in
    the geometric-mean sense; > 0 where the adversarial images have more of that
    frequency); ``perturbation``: the average power spectrum of ``x_adv - x`` (Absum
    Fig. 7), drawn on a log scale.
    """

    clean: np.ndarray
    adversarial: np.ndarray
    difference: np.ndarray
    perturbation: np.ndarray
    attack: str
    eps: float
    n: int
    clean_accuracy: float
    adversarial_accuracy: float

    def arrays(self) -> dict[str, Any]:
        return {
            "clean": self.clean, "adversarial": self.adversarial, "difference": self.difference,
            "perturbation": self.perturbation, "attack": np.array(self.attack), "eps": np.array(self.eps),
            "n": np.array(self.n), "clean_accuracy": np.array(self.clean_accuracy),
            "adversarial_accuracy": np.array(self.adversarial_accuracy),
        }


def spectrum_analysis(
    model: nn.Module, x: Tensor, y: Tensor, attack: Any, eps: float, *, batch_size: int = 256,
    device: torch.device | str = "cpu", seed: int = 0,
) -> Spectrum:
    """Attack ``x`` (CPU, [0, 1]) at ``eps`` in batches and compare the spectra.

    ``attack`` is an attack object or a spec string (``"pgd:steps=20"``); random attacks
    draw from a generator seeded with ``seed``. Every image enters the averages (local-
    response-differences Fig. 2 uses all 1000 test images), also those the model gets
    wrong or the attack does not fool. The model's mode and parameters are left as they
    were.
    """
    device = resolve_device(device)
    attack_obj = get_attack(attack) if isinstance(attack, str) else attack
    generator = torch.Generator().manual_seed(int(seed))
    adversarial: list[Tensor] = []
    clean_correct = adv_correct = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            result = attack_obj(model, xb, yb, eps=eps, generator=generator)
            x_adv = (result.x_adv if isinstance(result, Deformation) else result).detach()
            with torch.no_grad():
                clean_correct += int((model(xb).argmax(1) == yb).sum())
                adv_correct += int((model(x_adv).argmax(1) == yb).sum())
            adversarial.append(x_adv.cpu())
    x_adv_all = torch.cat(adversarial).to(x.dtype)
    n = len(x)
    return compare_spectra(x, x_adv_all, attack=canonical_name(attack_obj), eps=eps,
                           clean_accuracy=clean_correct / max(n, 1), adversarial_accuracy=adv_correct / max(n, 1))


def compare_spectra(
    x: Tensor, x_adv: Tensor, *, attack: str, eps: float, clean_accuracy: float = float("nan"),
    adversarial_accuracy: float = float("nan"),
) -> Spectrum:
    """The :class:`Spectrum` of adversarials made elsewhere (e.g. reused from another
    analysis): ``x`` and ``x_adv`` are ``(N, C, H, W)`` of the same shape; the accuracies
    are recorded as given (NaN when unknown)."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    clean = average_log_amplitude(x)
    adv = average_log_amplitude(x_adv)
    return Spectrum(
        clean=clean.numpy(), adversarial=adv.numpy(), difference=(adv - clean).numpy(),
        perturbation=average_power(x_adv.to(x.dtype) - x).numpy(), attack=attack, eps=float(eps), n=len(x),
        clean_accuracy=float(clean_accuracy), adversarial_accuracy=float(adversarial_accuracy),
    )


def radial_band_mean(values: np.ndarray, low: float, high: float) -> float:
    """Mean of a shifted ``(H, W)`` spectrum over the frequencies at Euclidean distance
    ``low < d <= high`` (in DFT bins) from the centre ``(H // 2, W // 2)``: e.g. the mean
    log-amplitude difference of Fig. 2(c) in a low (``-1 < d <= H/4``) and a high
    (``d > H/4``) band. NaN when the band holds no frequency."""
    height, width = values.shape
    rows = np.arange(height)[:, None] - height // 2
    cols = np.arange(width)[None, :] - width // 2
    distance = np.hypot(rows, cols)
    band = (distance > low) & (distance <= high)
    return float(values[band].mean()) if band.any() else float("nan")


def spectrum_figure(spectrum: Spectrum) -> plt.Figure:
    """Four panels: natural, adversarial (shared colour scale), their difference
    (diverging, centred at 0) and the perturbation's power (log10). Axes are the
    horizontal and vertical frequency in cycles per pixel (0 = the DC term at the
    centre, +-0.5 at the edges); each colour bar names its quantity."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.9))
    low = float(min(spectrum.clean.min(), spectrum.adversarial.min()))
    high = float(max(spectrum.clean.max(), spectrum.adversarial.max()))
    bound = float(np.abs(spectrum.difference).max()) or 1.0
    shared = {"cmap": "jet", "vmin": low, "vmax": high}
    panels = [
        (spectrum.clean, "natural: mean log|F|", "log amplitude", shared),
        (spectrum.adversarial, "adversarial: mean log|F|", "log amplitude", shared),
        (spectrum.difference, "difference: adv − nat", "log amplitude ratio",
         {"cmap": "bwr", "vmin": -bound, "vmax": bound}),
        (np.log10(spectrum.perturbation + LOG_FLOOR**2), "perturbation: log10 mean |F|²", "log10 power",
         {"cmap": "jet"}),
    ]
    extent = frequency_extent(*spectrum.clean.shape)
    for ax, (values, title, unit, style) in zip(axes, panels, strict=True):
        image = ax.imshow(values, extent=extent, **style)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("horizontal frequency (cycles/pixel)", fontsize=8)
        ax.set_ylabel("vertical frequency (cycles/pixel)", fontsize=8)
        ax.set_xticks([-0.5, 0.0, 0.5])
        ax.set_yticks([-0.5, 0.0, 0.5])
        ax.tick_params(labelsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label(unit, fontsize=8)
    fig.suptitle(
        f"{spectrum.attack} eps={spectrum.eps:.4g}, n={spectrum.n}: accuracy "
        f"{100 * spectrum.clean_accuracy:.1f}% clean, {100 * spectrum.adversarial_accuracy:.1f}% adversarial",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_spectrum(spectrum: Spectrum, path: Path | str) -> Path:
    """Write :func:`spectrum_figure` as a PNG at ``path``."""
    return save_figure(spectrum_figure(spectrum), Path(path))


def plot_spectra(spectra: Mapping[str, Spectrum], path: Path | str) -> Path:
    """local-response-differences Fig. 2 for several models: (a) the natural images'
    mean log-amplitude spectrum, then per model (e.g. ``{"STD": ..., "ADV": ...}``) its
    adversarials' spectrum and the difference ``log|adv| - log|nat|`` (b, c for STD; d, e
    for ADV). Spectra share one colour scale, differences another (symmetric about 0), so
    panels compare across models. The spectra must be of the same natural images."""
    items = list(spectra.items())
    if not items:
        raise ValueError("give at least one spectrum")
    first = items[0][1]
    low = min(float(first.clean.min()), *(float(sp.adversarial.min()) for _, sp in items))
    high = max(float(first.clean.max()), *(float(sp.adversarial.max()) for _, sp in items))
    bound = max(float(np.abs(sp.difference).max()) for _, sp in items) or 1.0
    panels = [(first.clean, "natural images", "log amplitude", {"cmap": "jet", "vmin": low, "vmax": high})]
    for name, sp in items:
        panels.append((sp.adversarial, f"adversarial ({name})", "log amplitude",
                       {"cmap": "jet", "vmin": low, "vmax": high}))
        panels.append((sp.difference, f"difference ({name}): adv − nat", "log amplitude ratio",
                       {"cmap": "bwr", "vmin": -bound, "vmax": bound}))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    extent = frequency_extent(*first.clean.shape)
    for ax, (values, title, unit, style) in zip(axes[0], panels, strict=True):
        image = ax.imshow(values, extent=extent, **style)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([-0.5, 0.0, 0.5])
        ax.set_yticks([-0.5, 0.0, 0.5])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("cycles/pixel", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label(unit, fontsize=8)
    fig.suptitle(f"mean log-amplitude spectra, {first.attack} eps={first.eps:.4g}, n={first.n} "
                 "(centre: DC, corners: highest frequencies)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def frequency_extent(height: int, width: int) -> tuple[float, float, float, float]:
    """``imshow`` extent of an ``fftshift``-ed ``(height, width)`` spectrum in cycles per
    pixel: index ``k`` sits at frequency ``(k - n // 2) / n``; row 0 at the top."""
    def edges(n: int) -> tuple[float, float]:
        return (0 - n // 2 - 0.5) / n, (n - 1 - n // 2 + 0.5) / n

    left, right = edges(width)
    top, bottom = edges(height)
    return left, right, bottom, top


def write_spectrum(spectrum: Spectrum, out: Path | str) -> tuple[Path, Path]:
    """Write ``out/spectrum.npz`` (the arrays and scalars) and ``out/spectrum.png``."""
    out = Path(out)
    npz = out / SPECTRUM_NPZ
    with atomic_open(npz, "wb") as handle:
        np.savez(handle, **spectrum.arrays())
    png = plot_spectrum(spectrum, out / SPECTRUM_PNG)
    return png, npz
