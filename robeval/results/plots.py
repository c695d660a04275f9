"""Figures: accuracy-vs-bound curves in L0/L2/L-inf (smooth-kernels appendix B,
Figs. 7-9) and the targeted-attack example grid (appendix C, Figs. 10-37)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from torch import Tensor

from robeval.atomic import atomic_open

NORM_TITLES = {"l0": r"$\ell_0$ bound", "l2": r"$\ell_2$ bound", "linf": r"$\ell_\infty$ bound"}


def norm_curves_figure(curves: pd.DataFrame) -> plt.Figure:
    """One panel per norm, one step line per (model, attack), each pair in the same colour
    in every panel; the legend sits below the panels, never over the curves."""
    fig, axes = plt.subplots(1, len(NORM_TITLES), figsize=(4.2 * len(NORM_TITLES), 3.4), squeeze=False)
    pairs = list(dict.fromkeys(zip(curves["model"], curves["attack"], strict=True)))
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    handles: dict[str, plt.Artist] = {}
    for ax, (norm, title) in zip(axes[0], NORM_TITLES.items(), strict=True):
        part = curves[curves["norm"] == norm]
        for (model, attack), line in part.groupby(["model", "attack"], sort=False):
            label = f"{model} · {attack}"
            colour = colours[pairs.index((model, attack)) % len(colours)]
            (handles[label],) = ax.step(line["bound"], 100 * line["robust_acc"], where="post", label=label,
                                        color=colour)
        ax.set_xlabel(title)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    if handles:
        ordered = [label for label in (f"{m} · {a}" for m, a in pairs) if label in handles]
        fig.legend([handles[label] for label in ordered], ordered, fontsize=7, loc="upper center",
                   bbox_to_anchor=(0.5, 0.0), ncol=min(len(ordered), 3), frameon=False)
    return fig


def plot_norm_curves(curves: pd.DataFrame, path: Path) -> Path:
    """Write :func:`norm_curves_figure` as a PNG at ``path`` (cropped to include the legend)."""
    return save_figure(norm_curves_figure(curves), path, tight=True)


def plot_targeted_grid(
    images: Tensor, success: Tensor, present: Tensor, classes: list[str], title: str, path: Path
) -> Path:
    """``images[target, original]``: columns are the original class, rows the target
    class (as in the paper); a green frame marks a success, red a failure, grey the
    clean image on the diagonal."""
    k = len(classes)
    fig, axes = plt.subplots(k, k, figsize=(0.9 * k + 0.8, 0.9 * k + 0.8), squeeze=False)
    for target in range(k):
        for original in range(k):
            ax = axes[target][original]
            ax.set_xticks([])
            ax.set_yticks([])
            if target == 0:
                ax.set_title(classes[original], fontsize=7)
            if original == 0:
                ax.set_ylabel(classes[target], fontsize=7)
            if not present[original]:  # no clean-correct example of this class: a blank column
                for spine in ax.spines.values():
                    spine.set_visible(False)
                continue
            image = images[target, original]
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            color = "0.6" if target == original else ("tab:green" if success[target, original] else "tab:red")
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2)
    fig.suptitle(title, fontsize=9)
    fig.supxlabel("original class", fontsize=8)
    fig.supylabel("target class", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path, *, tight: bool = False) -> Path:
    """Write ``fig`` as a 110-dpi PNG atomically and close it; ``tight`` crops to the
    drawn content (legends placed outside the axes)."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


def show_image(ax: plt.Axes, image: Tensor, title: str = "", *, colour: str = "black", fontsize: int = 7) -> None:
    """One (C, H, W) image in [0, 1] on ``ax``: grey for one channel, RGB otherwise, no ticks."""
    picture = image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
    if title:
        ax.set_title(title, fontsize=fontsize, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
