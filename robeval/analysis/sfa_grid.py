"""Accuracy under the single Fourier attack for every frequency ``(l, m)`` (Absum
Table 1 and Fig. 4): the per-mode accuracies, their average ("Avg.") and minimum
("Min.", the accuracy against the SFA with optimised ``(l, m)``), and a heat map."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from robeval.attacks.fourier import sfa_perturbation
from robeval.device import resolve_device
from robeval.results.plots import save_figure


def sfa_grid(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, batch_size: int = 256,
    device: torch.device | str = "cpu", modes: Iterable[tuple[int, int]] | None = None,
    scale: str = "peak",
) -> pd.DataFrame:
    """Accuracy of ``model`` on ``clip(x + P_{l,m}, 0, 1)`` for each ``(l, m)``.

    ``P_{l,m}`` is :func:`robeval.attacks.fourier.sfa_perturbation` with ``scale``
    (``peak``, default: ``max |P| = eps``; ``eq6``: Eq. 6 literally, ``eps`` times a mode
    of peak 2 to 2.83), the same on every channel. ``modes`` defaults to the whole
    ``H x W`` grid in row-major order (Absum: ``l, m = 0..n-1``). Accuracy counts every
    image (as Absum's test accuracy does), also those the model gets wrong without the
    attack. The model must be in eval mode; it is not changed. Returns columns ``l, m,
    accuracy`` with ``attrs`` ``eps``, ``scale``, ``n`` and ``clean_accuracy``.
    """
    device = resolve_device(device)
    height, width = x.shape[-2:]
    mode_list = [(int(l), int(m)) for l, m in modes] if modes is not None else [
        (l, m) for l in range(height) for m in range(width)
    ]
    correct = torch.zeros(len(mode_list), dtype=torch.long)
    clean = 0
    perturbations = [
        sfa_perturbation(l, m, (height, width), eps, dtype=x.dtype, device=device, scale=scale)
        for l, m in mode_list
    ]
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            clean += int((model(xb).argmax(1) == yb).sum())
            for k, p in enumerate(perturbations):
                pred = model((xb + p.expand_as(xb)).clamp(0.0, 1.0)).argmax(1)
                correct[k] += int((pred == yb).sum())
    n = len(x)
    frame = pd.DataFrame({
        "l": [l for l, _ in mode_list], "m": [m for _, m in mode_list],
        "accuracy": (correct.double() / max(n, 1)).numpy(),
    })
    frame.attrs.update(eps=float(eps), scale=scale, n=n, clean_accuracy=clean / max(n, 1))
    return frame


def sfa_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """Absum Table 1's numbers: ``avg`` (accuracy averaged over ``(l, m)``), ``min``
    (the minimum over ``(l, m)``) and ``argmin``, the first ``(l, m)`` (in the frame's
    order) reaching it; also ``max`` (Fig. 4)."""
    if frame.empty:
        raise ValueError("empty SFA grid")
    acc = frame["accuracy"]
    row = frame.loc[acc.idxmin()]
    return {
        "avg": float(acc.mean()), "min": float(acc.min()), "max": float(acc.max()),
        "argmin": (int(row["l"]), int(row["m"])),
    }


def sfa_grid_figure(frame: pd.DataFrame) -> plt.Figure:
    """Heat map of the accuracy (%) over ``(l, m)``: rows ``l``, columns ``m``; modes
    missing from ``frame`` are blank. The colour scale spans the data's own range (a
    grid between 93 and 96 % is not one flat colour on a 0-100 scale), with a colour bar
    in %, and a red cross marks the mode of least accuracy (the optimised SFA)."""
    table = frame.pivot_table(index="l", columns="m", values="accuracy")
    table = table.reindex(index=range(int(frame["l"].max()) + 1), columns=range(int(frame["m"].max()) + 1))
    low, high = color_limits(100 * frame["accuracy"].to_numpy(dtype=float))
    summary = sfa_summary(frame)
    fig, ax = plt.subplots(figsize=(4.6, 3.9))
    image = ax.imshow(100 * table.to_numpy(dtype=float), cmap="viridis", vmin=low, vmax=high, origin="upper")
    ax.plot(summary["argmin"][1], summary["argmin"][0], marker="x", color="red", markersize=7, linestyle="none")
    ax.set_xlabel("m")
    ax.set_ylabel("l")
    eps = frame.attrs.get("eps")
    title = f"SFA accuracy: avg {100 * summary['avg']:.1f}%, min {100 * summary['min']:.1f}% at {summary['argmin']} (x)"
    if eps is not None:
        title += f"\neps = {eps:.4g}"
        if frame.attrs.get("scale", "peak") != "peak":
            title += f" (scale={frame.attrs['scale']})"
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    return fig


def plot_sfa_grid(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write :func:`sfa_grid_figure` as a PNG at ``path``."""
    return save_figure(sfa_grid_figure(frame), Path(path))


def color_limits(values: np.ndarray, *, pad: float = 0.5) -> tuple[float, float]:
    """``(min, max)`` of the finite ``values``; a constant grid gets ``value -/+ pad`` so
    that its colour bar still reads."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 100.0
    low, high = float(finite.min()), float(finite.max())
    return (low - pad, high + pad) if high == low else (low, high)
