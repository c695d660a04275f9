"""Tables of ``robeval run --worst-case`` and of AutoAttack's breakdown, as pure
functions of stored points.

* The ``worst-case`` rows of ``results.csv`` and ``samples.csv``: per model and eps, the
  points the whole cascade left robust (:mod:`robeval.eval.cascade`).
* ``worst_case.csv``: per model, eps and stage, the points the stage attacked (those the
  stages before it, and every stage at the smaller eps, left robust), the points it
  broke, the robust accuracy after it and its own cost.
* ``autoattack_breakdown.csv``: per AutoAttack cell, the robust accuracy after each of
  its sub-attacks, in the library's order (APGD-CE, APGD-T, FAB-T, Square for the
  standard version); the last equals the cell's robust accuracy.

Which sub-attack broke a point is kept in the result store, in a table of its own
(``autoattack_breakdown``, created on first use; the store's format version does not
change: a store written before it has no breakdown, and its cells are left out of
``autoattack_breakdown.csv`` with a warning). A batch's breakdown rows are written
before its points (:meth:`ResultStore.write_batch`), so a run killed in between
recomputes that batch and overwrites them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from robeval.atomic import atomic_write_text
from robeval.eval.cells import Cell
from robeval.results.store import BatchResult, Cost, ResultStore
from robeval.results.tables import RESULT_COLUMNS, SAMPLE_COLUMNS, success
from robeval.version import __version__

if TYPE_CHECKING:
    from robeval.eval.cascade import Cascade

log = logging.getLogger(__name__)

WORST_CASE = "worst-case"
STAGE_SEPARATOR = " > "  # results.csv's `stages` of a worst-case row: its attacks in cascade order
WORST_CASE_COLUMNS = [
    "model", "norm", "eps", "stage", "attack", "n", "attacked", "broken", "robust_acc",
    "forward_passes", "backward_passes", "seconds",
]
BREAKDOWN_COLUMNS = ["model", "attack", "eps", "sub_attack", "robust_acc_after", "stage"]
BREAKDOWN_SCHEMA = """
CREATE TABLE IF NOT EXISTS autoattack_breakdown (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, idx INTEGER NOT NULL, target INTEGER NOT NULL,
    broken_by TEXT NOT NULL,
    PRIMARY KEY (cell_key, idx, target)
);
"""


# -- the breakdown table in the result store ---------------------------------------------


def _ensure_breakdown_table(store: ResultStore) -> None:
    with store.guarded(), store._conn:
        store._conn.executescript(BREAKDOWN_SCHEMA)


def write_breakdown(
    store: ResultStore, cell_key: str, batch: int, idx: np.ndarray, target: np.ndarray, broken_by: np.ndarray,
) -> None:
    """Store, for every point of one batch of an AutoAttack cell, the sub-attack that
    broke it in this cell (``""``: none did), in one transaction. Call it before the
    batch's :meth:`~ResultStore.write_batch`."""
    _ensure_breakdown_table(store)
    rows = [(cell_key, batch, int(i), int(t), str(b)) for i, t, b in zip(idx, target, broken_by, strict=True)]
    with store.guarded(), store._conn:
        store._conn.executemany("INSERT OR REPLACE INTO autoattack_breakdown VALUES (?, ?, ?, ?, ?)", rows)


def read_breakdown(store: ResultStore, cell_key: str, points: BatchResult) -> np.ndarray | None:
    """Per point of ``points`` (a stored cell), the sub-attack that broke it in that cell
    (``""``: none); ``None`` when some point has no breakdown stored."""
    _ensure_breakdown_table(store)
    with store.guarded():
        rows = store._conn.execute(
            "SELECT idx, target, broken_by FROM autoattack_breakdown WHERE cell_key = ?", (cell_key,)
        ).fetchall()
    found = {(int(i), int(t)): str(b) for i, t, b in rows}
    names = [found.get((int(i), int(t))) for i, t in zip(points.idx, points.target, strict=True)]
    if any(name is None for name in names):
        return None
    return np.asarray(names, dtype=object)


# -- AutoAttack's breakdown --------------------------------------------------------------


@dataclass(frozen=True)
class BreakdownGroup:
    """AutoAttack cells to break down, in eps order, with the library's sub-attack order.

    ``inherit``: a standalone AutoAttack walking its eps grid, where a point broken at a
    smaller eps keeps the sub-attack that broke it there. In a worst-case cascade
    (``stage`` set) it does not: what AutoAttack finds robust at an eps is what the
    stages before it left, so points broken before it count as broken before its first
    sub-attack."""

    cells: tuple[Cell, ...]
    sub_attacks: tuple[str, ...]
    inherit: bool = True
    stage: int | None = None


def breakdown_frame(store: ResultStore, groups: Sequence[BreakdownGroup]) -> pd.DataFrame:
    """``autoattack_breakdown.csv``: per cell and sub-attack (in the library's order), the
    accuracy on the cell's points once that sub-attack and those before it have run. A
    point is robust after sub-attack ``i`` when it is robust at the end or was broken by
    a later sub-attack; the last row of a cell is therefore its robust accuracy."""
    rows = []
    for group in groups:
        inherited: np.ndarray | None = None
        for cell in group.cells:
            points = store.read_cell(cell.store_key)
            names = read_breakdown(store, cell.store_key, points)
            if names is None or len(points.idx) == 0:
                log.warning("no AutoAttack breakdown stored for %s at eps=%g (a store written before it was "
                            "recorded); left out of autoattack_breakdown.csv", cell.attack, cell.eps)
                inherited = None
                continue
            if group.inherit and inherited is not None and len(inherited) == len(names):
                names = np.where(names == "", inherited, names)
            inherited = names
            robust = points.adv_pred == points.label
            for i, sub in enumerate(group.sub_attacks):
                later = np.isin(names, list(group.sub_attacks[i + 1:])) if i + 1 < len(group.sub_attacks) else False
                rows.append({
                    "model": cell.model, "attack": cell.attack, "eps": cell.eps, "sub_attack": sub,
                    "robust_acc_after": float(np.mean(robust | later)),
                    "stage": group.stage if group.stage is not None else pd.NA,
                })
    frame = pd.DataFrame(rows, columns=BREAKDOWN_COLUMNS)
    frame["stage"] = frame["stage"].astype("Int64")
    return frame


# -- the worst-case rows -----------------------------------------------------------------


def _walk(cascade: Cascade) -> list[tuple[float, int, Cell]]:
    """(eps, stage, cell) in the order the cascade runs them."""
    return [(eps, k, cell) for eps in cascade.walked for k, cell in enumerate(cascade.cells[eps], start=1)]


def worst_case_frames(
    store: ResultStore, cascades: Sequence[Cascade], training: dict[str, str] | None = None,
    split_index: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The ``worst-case`` rows of ``results.csv`` and ``samples.csv`` and the stage table
    ``worst_case.csv`` of every cascade."""
    results, samples, stages = [], [], []
    for cascade in cascades:
        final: dict[float, tuple[BatchResult, Cost, str]] = {0.0: (cascade.clean, Cost(), cascade.key)}
        before, total = cascade.clean, Cost()
        for eps, k, cell in _walk(cascade):
            s = store.read_cell(cell.key)
            cost = store.cell_cost(cell.key)
            total = total + cost
            attacked = (before.clean_pred == before.label) & ~success(before)
            broken = attacked & success(s)
            stages.append({
                "model": cascade.model, "norm": cascade.norm, "eps": eps, "stage": k, "attack": cell.attack,
                "n": len(s.idx), "attacked": int(attacked.sum()), "broken": int(broken.sum()),
                "robust_acc": float(np.mean(s.adv_pred == s.label)) if len(s.idx) else np.nan,
                "forward_passes": cost.forward, "backward_passes": cost.backward, "seconds": round(cost.seconds, 4),
            })
            before = s
            if k == len(cascade.stages):
                final[eps] = (s, total, cell.key)
        for eps in cascade.eps:
            if eps not in final:
                continue
            s, cost, key = final[eps]
            results.append(_result_row(cascade, eps, s, cost, key, (training or {}).get(cascade.model, "")))
            samples.append(_sample_rows(cascade, eps, s, split_index))
    return (
        pd.DataFrame(results, columns=RESULT_COLUMNS),
        pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(columns=SAMPLE_COLUMNS),
        pd.DataFrame(stages, columns=WORST_CASE_COLUMNS),
    )


def _result_row(cascade: Cascade, eps: float, s: BatchResult, cost: Cost, key: str, training: str) -> dict:
    count = len(s.idx)
    return {
        "model": cascade.model, "training": training, "dataset": cascade.dataset, "attack": WORST_CASE,
        "norm": cascade.norm, "eps": eps, "target": "", "n": count,
        "clean_acc": float(np.mean(s.clean_pred == s.label)) if count else np.nan,
        "robust_acc": float(np.mean(s.adv_pred == s.label)) if count else np.nan,
        "target_success": np.nan, "mean_rel_perturbation": np.nan,
        "forward_passes": cost.forward, "backward_passes": cost.backward, "seconds": round(cost.seconds, 4),
        "robeval_version": __version__, "seed": cascade.seed, "cell_key": key,
        "stages": STAGE_SEPARATOR.join(cascade.stages),
    }


def _sample_rows(cascade: Cascade, eps: float, s: BatchResult, split_index: np.ndarray | None) -> pd.DataFrame:
    return pd.DataFrame({
        "model": cascade.model, "attack": WORST_CASE, "eps": eps, "index": s.idx,
        "split_index": split_index[s.idx] if split_index is not None else s.idx,
        "target": pd.array(np.full(len(s.idx), np.nan), dtype="Int64"),
        "label": s.label, "clean_pred": s.clean_pred, "adv_pred": s.adv_pred,
        "perturbation_norm": s.norm(cascade.norm),
        "l0": s.l0, "l2": s.l2, "linf": s.linf,
    })




def write_tables(out: Path, tables: dict[str, pd.DataFrame | None]) -> dict[str, Path]:
    """Write each non-empty table as ``out/NAME.csv`` (atomically); return the paths."""
    written = {}
    for name, frame in tables.items():
        if frame is not None and len(frame):
            written[name] = out / f"{name}.csv"
            atomic_write_text(written[name], frame.to_csv(index=False))
    return written


__all__ = [
    "BREAKDOWN_COLUMNS", "WORST_CASE", "WORST_CASE_COLUMNS", "BreakdownGroup", "breakdown_frame", "read_breakdown",
    "worst_case_frames", "write_breakdown", "write_tables",
]
