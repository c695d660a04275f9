"""Tables as pure functions of stored samples: the tidy results rows, the
accuracy-epsilon pivot and its Markdown rendering."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd

from robeval.eval.cells import Cell
from robeval.results.store import BatchResult, ResultStore
from robeval.version import __version__

RESULT_COLUMNS = [
    "model", "dataset", "attack", "norm", "eps", "n", "clean_acc", "robust_acc",
    "seconds", "robeval_version", "seed", "cell_key",
]
SAMPLE_COLUMNS = [
    "model", "attack", "eps", "index", "split_index", "label", "clean_pred", "adv_pred", "perturbation_norm",
]


def read_cells(store: ResultStore, cells: list[Cell]) -> dict[str, BatchResult]:
    """Every cell's stored samples, read once for all tables."""
    return {cell.key: store.read_cell(cell.key) for cell in cells}


def results_frame(store: ResultStore, cells: list[Cell], samples: dict[str, BatchResult]) -> pd.DataFrame:
    """One row per cell: clean and robust accuracy over its samples, attack seconds."""
    rows = []
    for cell in cells:
        s = samples[cell.key]
        count = len(s.idx)
        rows.append({
            "model": cell.model, "dataset": cell.dataset, "attack": cell.attack,
            "norm": cell.norm, "eps": cell.eps, "n": count,
            "clean_acc": float(np.mean(s.clean_pred == s.label)) if count else np.nan,
            "robust_acc": float(np.mean(s.adv_pred == s.label)) if count else np.nan,
            "seconds": round(store.cell_seconds(cell.key), 4),
            "robeval_version": __version__, "seed": cell.seed, "cell_key": cell.key,
        })
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def samples_frame(
    cells: list[Cell], samples: dict[str, BatchResult], split_index: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-sample outcomes of every cell. ``index`` is the position in the seeded subset,
    ``split_index`` (when given) the image's position in the data set's test split."""
    frames = []
    for cell in cells:
        s = samples[cell.key]
        frames.append(pd.DataFrame({
            "model": cell.model, "attack": cell.attack, "eps": cell.eps, "index": s.idx,
            "split_index": split_index[s.idx] if split_index is not None else s.idx,
            "label": s.label, "clean_pred": s.clean_pred, "adv_pred": s.adv_pred,
            "perturbation_norm": s.perturbation_norm,
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SAMPLE_COLUMNS)


def accuracy_eps_table(results: pd.DataFrame) -> pd.DataFrame:
    """Pivot: rows (model, attack), columns eps labels (``0``, ``8/255``...), robust accuracy."""
    table = results.pivot_table(
        index=["model", "attack"], columns="eps", values="robust_acc", sort=False
    )
    table = table.reindex(columns=sorted(table.columns))
    table.columns = [format_eps(float(e)) for e in table.columns]
    return table


def format_eps(eps: float) -> str:
    """A short exact label: ``0.3`` for decimals, ``8/255`` for multiples of 1/255."""
    short = f"{eps:.4g}"
    if float(short) == eps:
        return short
    frac = Fraction(eps).limit_denominator(255)
    if frac.denominator in (255, 85, 51, 17, 15, 5, 3) and abs(float(frac) - eps) < 1e-12:
        return f"{round(eps * 255)}/255"
    return short


def markdown_table(table: pd.DataFrame, *, percent: bool = True) -> str:
    """Render the pivot as a GitHub Markdown table (accuracies in %)."""
    index_names = [str(n) for n in table.index.names]
    header = index_names + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for keys, row in table.iterrows():
        keys = keys if isinstance(keys, tuple) else (keys,)
        cells = [f"{100 * v:.1f}" if percent else f"{v:.4f}" for v in row.to_numpy(dtype=float)]
        lines.append("| " + " | ".join([*map(str, keys), *cells]) + " |")
    return "\n".join(lines) + "\n"
