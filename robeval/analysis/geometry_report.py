"""``robeval gradients``: the gradient and curvature statistics of
:mod:`robeval.analysis.geometry` for one or more models on the same seeded test points,
with the PGD conditioning of the thesis' Table 4.1, written as CSV, Markdown and a plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from robeval.analysis.geometry import GeometryConfig, geometry_samples, geometry_summary
from robeval.analysis.inputs import write_analysis_files
from robeval.eval.cells import batch_seed
from robeval.eval.runner import eval_mode
from robeval.models import LoadedModel
from robeval.results.plots import save_figure
from robeval.results.tables import format_eps

SUMMARY_COLUMNS = {  # what the Markdown table shows, and how
    "n": "n", "attack_success": "attack success", "grad_l1_mean": "E‖g‖₁",
    "grad_l1_attack_failed": "E‖g‖₁ (attack failed)", "grad_l1_attack_succeeded": "E‖g‖₁ (attack succeeded)",
    "grad_l2_mean": "E‖g‖₂", "hessian_norm_mean": "E‖H‖₂", "log10_curvature_mean": "E log10 C",
    "log10_linearity_error_mean": "E log10 LLE", "saliency_edge_corr_mean": "corr(log saliency, log edge)",
}


def gradient_statistics(
    models: list[tuple[LoadedModel, str]], x: torch.Tensor, y: torch.Tensor, attack: Any, attack_name: str,
    config: GeometryConfig, *, batch_size: int, device: torch.device,
) -> pd.DataFrame:
    """Per-sample statistics of every model (``model`` column first), in batches; the
    attack (at ``config.eps``) decides the ``attack_fooled`` conditioning."""
    parts = []
    for loaded, name in models:
        with eval_mode(loaded.model) as model:
            for batch, start in enumerate(range(0, len(x), batch_size)):
                xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
                generator = torch.Generator().manual_seed(batch_seed(config.seed, f"gradients:{attack_name}", batch))
                x_adv = attack(model, xb, yb, eps=config.eps, generator=generator)
                with torch.no_grad():
                    fooled = model(x_adv).argmax(1) != yb
                batch_config = dataclasses.replace(config, seed=batch_seed(config.seed, "lle", batch))
                frame = geometry_samples(model, xb, yb, fooled, batch_config)
                frame.insert(0, "index", np.arange(start, start + len(xb)))
                frame.insert(0, "model", name)
                parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def summary_markdown(summary: pd.DataFrame, *, attack: str, eps: float) -> str:
    """The per-model summary as a Markdown table (thesis Tables 4.1, A.1, A.2, 5.1)."""
    header = ["model", *SUMMARY_COLUMNS.values()]
    lines = [f"Gradient statistics; attack for the conditioning: {attack} at eps {format_eps(eps)}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        cells = [str(row["model"])] + [_fmt(row[c]) for c in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_distributions(samples: pd.DataFrame, path: Path) -> Path:
    """Histograms of log10 normalised curvature, local linearity error and gradient L1
    norm per model (the thesis' Figs. A.1 and A.2)."""
    columns = [("curvature", "log10 normalised curvature"), ("linearity_error", "log10 local linearity error"),
               ("grad_l1", "log10 ||grad_x L||_1")]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.2), squeeze=False)
    for ax, (column, label) in zip(axes[0], columns, strict=True):
        for model, part in samples.groupby("model", sort=False):
            ax.hist(np.log10(part[column].to_numpy(dtype=float) + 1e-17), bins=30, alpha=0.55, label=str(model))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test points")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def write_gradient_outputs(out: Path, samples: pd.DataFrame, *, attack: str, eps: float) -> dict[str, Path]:
    """gradients_samples.csv, gradients.csv (summary), gradients.md and gradients.png."""
    summary = geometry_summary(samples)
    return write_analysis_files(out, "gradients", samples, summary, summary_markdown(summary, attack=attack, eps=eps),
                                lambda path: plot_distributions(samples, path))


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.4g}"
