"""Accuracy on frequency-filtered and frequency-swapped images versus the filter radius:
local-response-differences Sec. 3.1, Fig. 1 (a, b: low-pass filtered natural and
adversarial images; c, d: "merged" images, the low frequencies of one with the high
frequencies of the other) and Fig. 6 (high-pass filtered images), and Absum's
High-Frequency attack (accuracy of low-pass filtered images against the radius).

The filters are :func:`robeval.attacks.fourier.lowpass`, ``highpass`` and
``frequency_swap``: a radial mask of Euclidean radius ``r`` around the DC term of the
``fftshift``-ed unnormalised 2-D DFT of every channel (``d <= r`` is "low").

Clipping (``clip``, off by default). The paper describes no clipping of the filtered
images (Sec. 3.1, Appendix A), and :func:`frequency_sweep` feeds them to the model as
they are unless ``clip=True``: the model then sees values outside [0, 1]. A high-pass
image has zero mean (its DC term is removed), so a large share of its entries (about
half, for natural images) is negative, most within [-1, 1]; low-pass and merged images
ring slightly below 0 and above 1 near edges (Gibbs). robeval's models take any real
input (the :class:`~robeval.models.Normalize` wrapper computes ``(x - mean) / std`` and
checks no range). ``clip=True`` clamps every filtered and merged image to [0, 1] first
(robeval's behaviour before the option existed): the model is only shown valid images,
but the clamp zeroes the negative part of a high-pass image, so the high-pass curves
then measure something else than Fig. 6.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import Tensor, nn

from robeval.atomic import atomic_open
from robeval.attacks import get as get_attack
from robeval.attacks.base import Deformation
from robeval.attacks.fourier import frequency_swap, highpass, lowpass
from robeval.device import resolve_device
from robeval.eval.runner import eval_mode
from robeval.results.plots import save_figure

FREQUENCY_CSV = "frequency.csv"
FREQUENCY_PNG = "frequency.png"

#: The columns of :func:`frequency_sweep`'s table, in order.
COLUMNS = (
    "radius",
    "natural_lowpass_acc",
    "natural_highpass_acc",
    "adversarial_lowpass_acc",
    "adversarial_highpass_acc",
    "low_natural_high_adv_acc",
    "low_adv_high_natural_acc",
)


def default_radii(h: int, w: int) -> list[float]:
    """``0, 1, 2, ..., R`` with ``R = ceil(sqrt((h // 2)^2 + (w // 2)^2))``.

    ``R`` is the (ceil of the) largest distance of any frequency from the centre
    ``(h // 2, w // 2)`` of the shifted spectrum, i.e. the half-diagonal, so at radius
    ``R`` the low-pass filter keeps everything (the image itself) and the high-pass filter
    nothing; radius 0 keeps only the DC term in the low-pass image. For 8x8 digits this is
    0..6, for 28x28 MNIST 0..20, for 32x32 CIFAR 0..23.
    """
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, not {h}x{w}")
    top = math.ceil(math.hypot(h // 2, w // 2))
    return [float(r) for r in range(top + 1)]


@torch.no_grad()
def _accuracy(
    model: nn.Module, images: Tensor, y: Tensor, transform: Callable[[Tensor, Tensor], Tensor],
    other: Tensor, batch_size: int, device: torch.device, clip: bool = False,
) -> float:
    correct = 0
    for start in range(0, len(images), batch_size):
        xb = images[start : start + batch_size].to(device)
        ob = other[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        filtered = transform(xb, ob)
        if clip:
            filtered = filtered.clamp(0.0, 1.0)
        correct += int((model(filtered).argmax(1) == yb).sum())
    return correct / max(len(images), 1)


def frequency_sweep(
    model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, radii: Sequence[float], *,
    batch_size: int = 256, device: torch.device | str = "cpu", clip: bool = False,
) -> pd.DataFrame:
    """One row per radius ``r`` with the accuracy (fraction of all given images whose
    ``argmax`` equals ``y``, no matter whether the clean image was right) on

    * ``natural_lowpass_acc`` / ``natural_highpass_acc``: ``lowpass(x, r)`` /
      ``highpass(x, r)`` (Fig. 1(a, b), Fig. 6, green);
    * ``adversarial_lowpass_acc`` / ``adversarial_highpass_acc``: the same of ``x_adv``
      (red);
    * ``low_natural_high_adv_acc``: ``frequency_swap(x, x_adv, r)``, the natural
      image's low frequencies with the adversarial's high ones ("merged natural
      examples", Fig. 1(c, d)): the adversarial accuracy at ``r = 0``-ish, the natural
      accuracy once ``r`` reaches the half-diagonal;
    * ``low_adv_high_natural_acc``: ``frequency_swap(x_adv, x, r)`` ("merged
      adversarial examples"), the other way round.

    ``clip=False`` (default, the paper's setting): the model is fed these images as
    they are, values outside [0, 1] included; ``clip=True``: each is clamped to [0, 1]
    first (see the module docstring). ``x`` and ``x_adv`` are ``(N, C, H, W)`` of the same
    shape; the model's mode and parameters are left as they were. The returned frame
    records the choice in ``frame.attrs["clip"]``.
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    radii = [float(r) for r in radii]
    if not radii:
        raise ValueError("give at least one radius")
    for r in radii:
        if not r >= 0 or math.isinf(r):
            raise ValueError(f"radii must be finite and >= 0, not {r}")
    device = resolve_device(device)
    rows: list[dict[str, float]] = []
    with eval_mode(model):
        for r in radii:
            def low(a: Tensor, _b: Tensor, r: float = r) -> Tensor:
                return lowpass(a, r)

            def high(a: Tensor, _b: Tensor, r: float = r) -> Tensor:
                return highpass(a, r)

            def swap(a: Tensor, b: Tensor, r: float = r) -> Tensor:
                return frequency_swap(a, b, r)

            def acc(images: Tensor, other: Tensor, transform: Callable[[Tensor, Tensor], Tensor]) -> float:
                return _accuracy(model, images, y, transform, other, batch_size, device, clip)

            rows.append({
                "radius": r,
                "natural_lowpass_acc": acc(x, x, low),
                "natural_highpass_acc": acc(x, x, high),
                "adversarial_lowpass_acc": acc(x_adv, x_adv, low),
                "adversarial_highpass_acc": acc(x_adv, x_adv, high),
                "low_natural_high_adv_acc": acc(x, x_adv, swap),
                "low_adv_high_natural_acc": acc(x_adv, x, swap),
            })
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["clip"] = bool(clip)
    return frame


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256,
             device: torch.device | str = "cpu") -> float:
    """Plain (unfiltered) accuracy of ``model`` on ``x``."""
    device = resolve_device(device)
    with eval_mode(model):
        return _accuracy(model, x, y, lambda a, _b: a, x, batch_size, device)


def make_adversarials(
    model: nn.Module, x: Tensor, y: Tensor, attack: Any, eps: float, *, batch_size: int = 256,
    device: torch.device | str = "cpu", seed: int = 0,
) -> Tensor:
    """Attack every image of ``x`` at ``eps`` in batches (as
    :func:`robeval.analysis.spectrum.spectrum_analysis` does) and return the adversarial
    images on the CPU in ``x``'s dtype. ``attack`` is an object or a spec string; a
    :class:`~robeval.attacks.base.Deformation` result contributes its ``x_adv``."""
    device = resolve_device(device)
    attack_obj = get_attack(attack) if isinstance(attack, str) else attack
    generator = torch.Generator().manual_seed(int(seed))
    adversarial: list[Tensor] = []
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            result = attack_obj(model, xb, yb, eps=eps, generator=generator)
            adversarial.append((result.x_adv if isinstance(result, Deformation) else result).detach().cpu())
    if not adversarial:
        return x.clone()
    return torch.cat(adversarial).to(x.dtype)


def plot_frequency_sweep(frame: pd.DataFrame, path: Path | str, *, title: str | None = None) -> Path:
    """Two panels of accuracy against the radius: low-pass filtered natural and
    adversarial images plus the two merged curves (Fig. 1), and high-pass filtered
    natural and adversarial images (Fig. 6). Written atomically as PNG."""
    fig, (ax_low, ax_high) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    r = frame["radius"]
    ax_low.plot(r, frame["natural_lowpass_acc"], "o-", color="tab:green", label="natural, low-pass")
    ax_low.plot(r, frame["adversarial_lowpass_acc"], "o-", color="tab:red", label="adversarial, low-pass")
    ax_low.plot(r, frame["low_natural_high_adv_acc"], "s--", color="tab:blue",
                label="low natural + high adversarial")
    ax_low.plot(r, frame["low_adv_high_natural_acc"], "s--", color="tab:orange",
                label="low adversarial + high natural")
    ax_low.set_title("low-pass filtered and merged images", fontsize=10)
    ax_high.plot(r, frame["natural_highpass_acc"], "o-", color="tab:green", label="natural, high-pass")
    ax_high.plot(r, frame["adversarial_highpass_acc"], "o-", color="tab:red", label="adversarial, high-pass")
    ax_high.set_title("high-pass filtered images", fontsize=10)
    for ax in (ax_low, ax_high):
        ax.set_xlabel("frequency radius")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_low.set_ylabel("accuracy")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(path))


#: Rows of :func:`plot_frequency_figure`: (title, [(column, colour, label), ...]).
_FIGURE_ROWS = (
    ("low-pass filtered (Fig. 1(a, b))", (("natural_lowpass_acc", "tab:green", "natural examples"),
                                          ("adversarial_lowpass_acc", "tab:red", "adversarial examples"))),
    ("merged (Fig. 1(c, d))", (("low_natural_high_adv_acc", "tab:green", "merged natural examples"),
                               ("low_adv_high_natural_acc", "tab:red", "merged adversarial examples"))),
    ("high-pass filtered (Fig. 6)", (("natural_highpass_acc", "tab:green", "natural examples"),
                                     ("adversarial_highpass_acc", "tab:red", "adversarial examples"))),
)


def plot_frequency_figure(frames: Mapping[str, pd.DataFrame], path: Path | str, *, half_size: float | None = None,
                          title: str | None = None) -> Path:
    """The paper's Fig. 1 and Fig. 6 for several models side by side (one column per
    entry of ``frames``, e.g. ``{"STD": ..., "ADV": ...}``): the low-pass filtered natural
    (green) and adversarial (red) images, the merged images, and the high-pass filtered
    images, against the radius. The paper's "merged natural examples" (Sec. 3.1: natural
    images with the high frequencies of the adversarial ones) are the
    ``low_natural_high_adv_acc`` column, its "merged adversarial examples" the other
    swap. ``half_size`` puts ``radius / half_size`` on the x axis (the paper's
    "frequency scale", 0 to 1.4 on its 32x32 images if read as the radius over half the
    width: the half-diagonal is then sqrt(2)). Written atomically as PNG."""
    fig, axes = plt.subplots(len(_FIGURE_ROWS), len(frames), figsize=(4.2 * len(frames), 3.2 * len(_FIGURE_ROWS)),
                             sharex=True, sharey=True, squeeze=False)
    for col, (name, frame) in enumerate(frames.items()):
        x = frame["radius"] / half_size if half_size else frame["radius"]
        for row, (what, curves) in enumerate(_FIGURE_ROWS):
            ax = axes[row][col]
            for column, colour, label in curves:
                ax.plot(x, frame[column], "o-", markersize=3, color=colour, label=label)
            ax.set_title(f"{name}: {what}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[-1][col].set_xlabel("frequency scale (radius / half width)" if half_size else "frequency radius")
    for row in axes:
        row[0].set_ylabel("test accuracy")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def write_frequency(out_dir: Path | str, frame: pd.DataFrame, *, title: str | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/frequency.csv`` and ``out_dir/frequency.png`` atomically; return
    ``(csv, png)``."""
    out_dir = Path(out_dir)
    csv = out_dir / FREQUENCY_CSV
    with atomic_open(csv, "w") as handle:
        frame.to_csv(handle, index=False)
    png = plot_frequency_sweep(frame, out_dir / FREQUENCY_PNG, title=title)
    return csv, png
