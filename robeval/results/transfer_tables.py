"""Transfer-grid tables and figures: ``transfer.csv`` (one row per source x target x
attack x eps), ``transfer_grid.md`` (rows = targets, columns = sources, as in SGR Tables
1 and 4), ``transfer_samples.csv`` and one heat map per attack (``transfer_ATTACK.png``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from robeval.atomic import atomic_write_text
from robeval.results.plots import save_figure
from robeval.results.store import ResultStore
from robeval.results.tables import format_eps
from robeval.version import __version__

if TYPE_CHECKING:
    from robeval.eval.transfer import TransferCell

TRANSFER_COLUMNS = [
    "source", "target", "white_box", "dataset", "attack", "norm", "eps", "n", "clean_acc", "adv_acc",
    "robust_acc", "transfer_rate", "source_forward_passes", "source_backward_passes", "seconds",
    "batch_size_used", "robeval_version", "seed", "cell_key",
]
SAMPLE_COLUMNS = ["source", "target", "attack", "eps", "index", "split_index", "label", "clean_pred", "adv_pred"]


def transfer_frame(store: ResultStore, cells: Sequence[TransferCell]) -> pd.DataFrame:
    """One row per cell. ``clean_acc``: the target's accuracy on the clean points;
    ``adv_acc``: on the source's adversarials; ``robust_acc``: correct on both (as in
    ``robeval run``); ``transfer_rate``: the share of the target's clean-correct points
    the adversarials fool. Costs are those of making the adversarials on the source;
    ``batch_size_used``: the smallest device batch they were made in (halved on
    out-of-memory, :mod:`robeval.eval.device_batch`; ``--batch-size`` where none was
    recorded), as in ``results.csv``."""
    rows = []
    for cell in cells:
        points = store.read_cell(cell.key)
        label, clean_pred, adv_pred = points.label, points.clean_pred, points.adv_pred
        correct = clean_pred == label
        robust = correct & (adv_pred == label)
        cost = store.cell_cost(cell.key)
        rows.append({
            "source": cell.source.model, "target": cell.target,
            "white_box": cell.source.model_identity == cell.target_identity, "dataset": cell.source.dataset,
            "attack": cell.source.attack, "norm": cell.source.norm, "eps": cell.source.eps, "n": len(label),
            "clean_acc": float(correct.mean()), "adv_acc": float((adv_pred == label).mean()),
            "robust_acc": float(robust.mean()),
            "transfer_rate": float(1 - robust.sum() / correct.sum()) if correct.any() else np.nan,
            "source_forward_passes": cost.forward, "source_backward_passes": cost.backward,
            "seconds": round(cost.seconds, 4), "batch_size_used": _batch_size_used(store, cell),
            "robeval_version": __version__, "seed": cell.source.seed,
            "cell_key": cell.key,
        })
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)


def _batch_size_used(store: ResultStore, cell: TransferCell) -> int:
    recorded = store.device_batch(cell.key)
    return cell.source.batch_size if recorded is None else recorded


def transfer_samples(store: ResultStore, cells: Sequence[TransferCell], split_index: np.ndarray) -> pd.DataFrame:
    """Per point: the target's clean and adversarial prediction."""
    parts = []
    for cell in cells:
        points = store.read_cell(cell.key)
        parts.append(pd.DataFrame({
            "source": cell.source.model, "target": cell.target, "attack": cell.source.attack,
            "eps": cell.source.eps, "index": points.idx, "split_index": split_index[points.idx],
            "label": points.label, "clean_pred": points.clean_pred, "adv_pred": points.adv_pred,
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SAMPLE_COLUMNS)


def transfer_grids(frame: pd.DataFrame) -> dict[tuple[str, float], pd.DataFrame]:
    """Per (attack, eps): robust accuracy with rows = targets and columns = sources."""
    grids = {}
    for (attack, eps), part in frame.groupby(["attack", "eps"], sort=True):
        grid = part.pivot(index="target", columns="source", values="robust_acc")
        order = list(dict.fromkeys(list(part["source"]) + list(part["target"])))
        grids[(attack, eps)] = grid.reindex(index=[m for m in order if m in grid.index],
                                            columns=[m for m in order if m in grid.columns])
    return grids


def transfer_markdown(frame: pd.DataFrame) -> str:
    """One Markdown table per (attack, eps): robust accuracy (%) of each target (row) on
    the adversarials of each source (column); ``*`` marks the white-box diagonal."""
    white = {(r.source, r.target) for r in frame.itertuples() if r.white_box}
    lines = []
    for (attack, eps), grid in transfer_grids(frame).items():
        lines += [f"### {attack}, eps {format_eps(eps)}", "",
                  "| target \\ source | " + " | ".join(map(str, grid.columns)) + " |",
                  "|---|" + "---|" * len(grid.columns)]
        for target, row in grid.iterrows():
            cells = ["" if np.isnan(v) else f"{100 * v:.1f}" + ("*" if (source, target) in white else "")
                     for source, v in row.items()]
            lines.append(f"| {target} | " + " | ".join(cells) + " |")
        lines.append("")
    n = int(frame["n"].max()) if len(frame) else 0
    return (f"Transfer grid: robust accuracy (%) of each target (row) on the adversarials of each "
            f"source (column), n={n}; `*` = white box (source = target).\n\n" + "\n".join(lines))


def plot_transfer_grid(frame: pd.DataFrame, attack: str, path: Path) -> Path:
    """Heat maps of one attack's grid, one panel per eps, annotated with percentages."""
    grids = {eps: g for (a, eps), g in transfer_grids(frame).items() if a == attack and eps > 0}
    if not grids:
        grids = {eps: g for (a, eps), g in transfer_grids(frame).items() if a == attack}
    first = next(iter(grids.values()))
    width = max(3.2, 0.9 * len(first.columns) + 1.8)
    label_width = 0.07 * max(len(str(i)) for i in first.index)  # inches for the target names, drawn once
    fig, axes = plt.subplots(1, len(grids), figsize=(width * len(grids) + label_width, max(2.8, 0.7 * len(first) + 1.6)),
                             squeeze=False, constrained_layout=True)
    for k, (ax, (eps, grid)) in enumerate(zip(axes[0], grids.items(), strict=True)):
        values = 100 * grid.to_numpy(dtype=float)
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
        ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index] if k == 0 else [], fontsize=8)
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if v < 60 else "black")
            if grid.index[i] == grid.columns[j]:  # white box: outlined
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
        ax.set_xlabel("source (adversarials made on)")
        ax.set_title(f"eps = {format_eps(eps)}", fontsize=9)
    axes[0][0].set_ylabel("target (evaluated)")
    fig.colorbar(image, ax=list(axes[0]), label="robust accuracy (%)", shrink=0.85)
    fig.suptitle(f"transfer grid · {attack} (red: white box)", fontsize=10)
    return save_figure(fig, Path(path), tight=True)


def write_transfer_outputs(out: Path, spec: dict, frame: pd.DataFrame, samples: pd.DataFrame) -> dict[str, Path]:
    """spec.yaml, transfer.csv, transfer_grid.md, transfer_samples.csv, one PNG per attack."""
    files = {"spec": out / "spec.yaml", "transfer": out / "transfer.csv", "grid_md": out / "transfer_grid.md",
             "samples": out / "transfer_samples.csv"}
    atomic_write_text(files["spec"], yaml.safe_dump(spec, sort_keys=False))
    atomic_write_text(files["transfer"], frame.to_csv(index=False))
    atomic_write_text(files["grid_md"], transfer_markdown(frame))
    atomic_write_text(files["samples"], samples.to_csv(index=False))
    for attack in dict.fromkeys(frame["attack"]):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(attack)).strip("_")
        files[f"png:{attack}"] = plot_transfer_grid(frame, attack, out / f"transfer_{slug}.png")
    return files
