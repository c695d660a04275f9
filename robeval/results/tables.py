"""Tables as pure functions of stored points: the tidy results rows, the
accuracy-epsilon pivot, minimal-norm accuracy-vs-bound curves in L0/L2/L-inf, the
targeted success grid, and their Markdown rendering."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import groupby

import numpy as np
import pandas as pd

from robeval.attacks.base import BALL_NORMS
from robeval.eval.cells import Cell
from robeval.results.store import BatchResult, Cost, ResultStore
from robeval.version import __version__

RESULT_COLUMNS = [
    "model", "training", "dataset", "attack", "norm", "eps", "target", "n", "clean_acc", "robust_acc",
    "target_success", "mean_rel_perturbation", "forward_passes", "backward_passes", "seconds", "batch_size_used",
    "robeval_version", "seed", "cell_key", "stages",
]
SAMPLE_COLUMNS = [
    "model", "attack", "eps", "index", "split_index", "target", "label", "clean_pred", "adv_pred",
    "perturbation_norm", "l0", "l2", "linf",
]
CURVE_COLUMNS = ["model", "attack", "norm", "bound", "robust_acc"]
GRID_COLUMNS = ["model", "attack", "eps", "original", "target", "n", "success_rate"]
CURVE_NORMS = ("l0", "l2", "linf")


def read_cells(store: ResultStore, cells: list[Cell]) -> dict[str, BatchResult]:
    """Every cell's stored points (by ``store_key``), read once for all tables."""
    return {key: store.read_cell(key) for key in dict.fromkeys(c.store_key for c in cells)}


def cell_samples(cell: Cell, stored: dict[str, BatchResult]) -> BatchResult:
    """The points of one cell. A minimal-norm attack's eps cell is read off its unbounded
    search: a point counts as fooled at ``eps`` when its adversarial lies within ``eps``
    in the attack's norm, and keeps its clean prediction otherwise (so with no bound a
    failed search counts as robust, smooth-kernels Table 1)."""
    s = stored[cell.store_key]
    if not cell.minimal or cell.unbounded:
        return s
    within = s.norm(cell.norm) <= cell.eps
    return s.replace(adv_pred=np.where(within, s.adv_pred, s.clean_pred))


def success(s: BatchResult) -> np.ndarray:
    """Per point: fooled (untargeted) or moved to its target (targeted)."""
    return np.where(s.target >= 0, s.adv_pred == s.target, s.adv_pred != s.label)


def cell_costs(store: ResultStore, cells: list[Cell]) -> dict[str, Cost]:
    """The work each cell's number took: for a budgeted attack the running total along
    its eps grid (the adversarials of smaller eps are reused), for a minimal-norm attack
    the whole search (every eps is read off it), for a non-nested attack its own work.
    Keyed by ``cell.key``."""
    costs: dict[str, Cost] = {}
    for _, group in groupby(cells, key=lambda c: (c.model, c.attack)):
        total = Cost()
        for cell in group:
            if cell.minimal:
                costs[cell.key] = store.cell_cost(cell.store_key)
            elif not cell.nested:
                costs[cell.key] = store.cell_cost(cell.key)
            else:
                total = total + store.cell_cost(cell.key)
                costs[cell.key] = total
    return costs


def batch_size_used(store: ResultStore, cells: list[Cell]) -> int:
    """The smallest device batch the cells' stored points were attacked in (halved on
    out-of-memory, :mod:`robeval.eval.device_batch`); their ``--batch-size`` where none
    was recorded (nothing attacked, or a store written before device batches were)."""
    recorded = [store.device_batch(key) for key in dict.fromkeys(c.store_key for c in cells)]
    sizes = [size for size in recorded if size is not None]
    return min(sizes) if sizes else min(c.batch_size for c in cells)


def results_frame(
    store: ResultStore, cells: list[Cell], stored: dict[str, BatchResult], training: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per cell: how its model was trained (from the checkpoint), clean and robust
    accuracy over its points, the targeted success rate, DeepFool's mean relative
    perturbation (minimal-norm attacks), the cost and the device batch used."""
    costs = cell_costs(store, cells)
    rows = []
    for cell in cells:
        s = cell_samples(cell, stored)
        count = len(s.idx)
        clean_ok = s.clean_pred == s.label
        hit = success(s) & clean_ok
        cost = costs[cell.key]
        rows.append({
            "model": cell.model, "training": (training or {}).get(cell.model, ""), "dataset": cell.dataset,
            "attack": cell.attack, "norm": cell.norm, "eps": cell.eps, "target": cell.target or "", "n": count,
            "clean_acc": float(np.mean(clean_ok)) if count else np.nan,
            "robust_acc": float(np.mean(s.adv_pred == s.label)) if count else np.nan,
            "target_success": float(hit.sum() / clean_ok.sum()) if cell.target and clean_ok.any() else np.nan,
            "mean_rel_perturbation": _mean_relative(s, cell, hit) if cell.minimal and cell.norm in BALL_NORMS else np.nan,
            "forward_passes": cost.forward, "backward_passes": cost.backward,
            "seconds": round(cost.seconds, 4), "batch_size_used": batch_size_used(store, [cell]),
            "robeval_version": __version__, "seed": cell.seed, "cell_key": cell.key, "stages": "",
        })
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _mean_relative(s: BatchResult, cell: Cell, hit: np.ndarray) -> float:
    """DeepFool Eq. 2: mean ``||r||_p / ||x||_p`` over the adversarials this row counts."""
    mask = hit & (s.x_norm > 0) & np.isfinite(s.norm(cell.norm))
    return float(np.mean(s.norm(cell.norm)[mask] / s.x_norm[mask])) if mask.any() else np.nan


def samples_frame(
    cells: list[Cell], stored: dict[str, BatchResult], split_index: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-point outcomes of every cell. ``index`` is the position in the seeded subset,
    ``split_index`` (when given) the image's position in the data set's test split;
    ``target`` is empty for untargeted attacks. For minimal-norm attacks the norms are
    those of the smallest adversarial found (``inf`` where the search failed)."""
    frames = []
    for cell in cells:
        s = cell_samples(cell, stored)
        frames.append(pd.DataFrame({
            "model": cell.model, "attack": cell.attack, "eps": cell.eps, "index": s.idx,
            "split_index": split_index[s.idx] if split_index is not None else s.idx,
            "target": pd.array(np.where(s.target >= 0, s.target, np.nan), dtype="Int64"),
            "label": s.label, "clean_pred": s.clean_pred, "adv_pred": s.adv_pred,
            "perturbation_norm": s.norm(cell.norm), "l0": s.l0, "l2": s.l2, "linf": s.linf,
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SAMPLE_COLUMNS)


def norm_curves_frame(cells: list[Cell], stored: dict[str, BatchResult]) -> pd.DataFrame:
    """Accuracy against an L0, L2 and L-inf bound for every minimal-norm attack, read off
    one search (smooth-kernels appendix B, Figs. 7-9): at bound ``b`` a point is correct
    when it is correct clean and its adversarial (if any) is larger than ``b``. One row
    per bound where the accuracy steps down, starting at ``b = 0``."""
    rows = []
    seen: set[tuple[str, str]] = set()
    for cell in cells:
        if not cell.minimal or (cell.model, cell.store_key) in seen:
            continue
        seen.add((cell.model, cell.store_key))
        s = stored[cell.store_key]
        n = len(s.idx)
        if n == 0:
            continue
        clean_ok = s.clean_pred == s.label
        breaks = clean_ok & (s.adv_pred != s.label)
        for name in CURVE_NORMS:
            norms = np.sort(s.norm(name)[breaks])
            bounds = np.unique(np.concatenate([[0.0], norms]))
            fooled = np.searchsorted(norms, bounds, side="right")
            acc = (clean_ok.sum() - fooled) / n
            rows += [(cell.model, cell.attack, name, float(b), float(a)) for b, a in zip(bounds, acc, strict=True)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def targeted_grid_frame(cells: list[Cell], stored: dict[str, BatchResult]) -> pd.DataFrame:
    """Targeted success per (original class, target class) for every targeted cell
    (smooth-kernels appendix C): the share of clean-correct samples of the original class
    that the attack moves to the target class. Original == target never occurs."""
    frames = []
    for cell in cells:
        if cell.target is None:
            continue
        s = cell_samples(cell, stored)
        ok = s.clean_pred == s.label
        frame = pd.DataFrame({"original": s.label[ok], "target": s.target[ok], "hit": s.adv_pred[ok] == s.target[ok]})
        grid = frame.groupby(["original", "target"], sort=True)["hit"].agg(["size", "mean"]).reset_index()
        grid = grid.rename(columns={"size": "n", "mean": "success_rate"})
        grid.insert(0, "eps", cell.eps)
        grid.insert(0, "attack", cell.attack)
        grid.insert(0, "model", cell.model)
        frames.append(grid)
    return pd.concat(frames, ignore_index=True)[GRID_COLUMNS] if frames else pd.DataFrame(columns=GRID_COLUMNS)


def accuracy_eps_table(results: pd.DataFrame) -> pd.DataFrame:
    """Pivot: rows (model, attack), columns eps labels (``0``, ``8/255``, ``unbounded``...),
    robust accuracy."""
    table = results.pivot_table(
        index=["model", "attack"], columns="eps", values="robust_acc", sort=False, dropna=False
    )
    table = table.reindex(columns=sorted(table.columns))
    table.columns = [format_eps(float(e)) for e in table.columns]
    return table


def format_eps(eps: float) -> str:
    """A short exact label: ``0.3`` for decimals, ``8/255`` for multiples of 1/255,
    ``unbounded`` for ``inf``."""
    if math.isinf(eps):
        return "unbounded"
    short = f"{eps:.4g}"
    if float(short) == eps:
        return short
    frac = Fraction(eps).limit_denominator(255)
    if frac.denominator in (255, 85, 51, 17, 15, 5, 3) and abs(float(frac) - eps) < 1e-12:
        return f"{round(eps * 255)}/255"
    return short


def markdown_table(table: pd.DataFrame, *, percent: bool = True) -> str:
    """Render the pivot as a GitHub Markdown table (accuracies in %; blank where a cell
    does not exist, e.g. a budgeted attack's unbounded column)."""
    index_names = [str(n) for n in table.index.names]
    header = index_names + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for keys, row in table.iterrows():
        keys = keys if isinstance(keys, tuple) else (keys,)
        values = row.to_numpy(dtype=float)
        cells = ["" if np.isnan(v) else (f"{100 * v:.1f}" if percent else f"{v:.4f}") for v in values]
        lines.append("| " + " | ".join([*map(str, keys), *cells]) + " |")
    return "\n".join(lines) + "\n"


def frame_markdown(frame: pd.DataFrame) -> str:
    """Any frame as a GitHub Markdown table: floats with 4 significant digits, blank for
    NaN, ``unbounded`` for inf."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "|".join(["---"] * len(frame.columns)) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_markdown_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _markdown_cell(value: object) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else (format_eps(value) if math.isinf(value) else f"{value:.4g}")
    return str(value).replace("|", "\\|")
