"""SQLite result store: one row per evaluated sample, written batch by batch.

A *cell* is one (model, data subset, attack, eps) combination, named by a hash of
everything that determines its numbers. Each batch is written in a single transaction,
so a run killed at any moment (even ``kill -9``) leaves only whole batches behind and
resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robeval.errors import RobevalError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_key TEXT PRIMARY KEY, description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, seconds REAL NOT NULL,
    PRIMARY KEY (cell_key, batch)
);
CREATE TABLE IF NOT EXISTS samples (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, idx INTEGER NOT NULL,
    label INTEGER NOT NULL, clean_pred INTEGER NOT NULL, adv_pred INTEGER NOT NULL,
    perturbation_norm REAL NOT NULL,
    PRIMARY KEY (cell_key, idx)
);
"""


@dataclass(frozen=True)
class BatchResult:
    """Per-sample outcomes of one batch of one cell (numpy arrays of equal length)."""

    idx: np.ndarray
    label: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    perturbation_norm: np.ndarray


class ResultStore:
    """The SQLite file behind a run directory (``DIR/store.sqlite``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RobevalError(
                f"{self.path} is not a readable result store ({exc}); move it away or use another --out"
            ) from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register_cell(self, cell_key: str, description: dict) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO cells VALUES (?, ?)",
                (cell_key, json.dumps(description, sort_keys=True)),
            )

    def done_batches(self, cell_key: str) -> set[int]:
        rows = self._conn.execute("SELECT batch FROM batches WHERE cell_key = ?", (cell_key,))
        return {int(r[0]) for r in rows}

    def write_batch(self, cell_key: str, batch: int, seconds: float, result: BatchResult) -> None:
        """Store one batch atomically (samples and the batch marker in one transaction)."""
        rows = [
            (cell_key, batch, int(i), int(lab), int(c), int(a), float(p))
            for i, lab, c, a, p in zip(
                result.idx, result.label, result.clean_pred, result.adv_pred,
                result.perturbation_norm, strict=True,
            )
        ]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?,?,?)", rows)
            self._conn.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (cell_key, batch, seconds)
            )

    def read_batch(self, cell_key: str, batch: int) -> BatchResult:
        rows = self._conn.execute(
            "SELECT idx, label, clean_pred, adv_pred, perturbation_norm FROM samples "
            "WHERE cell_key = ? AND batch = ? ORDER BY idx",
            (cell_key, batch),
        ).fetchall()
        return _to_result(rows)

    def read_cell(self, cell_key: str) -> BatchResult:
        rows = self._conn.execute(
            "SELECT idx, label, clean_pred, adv_pred, perturbation_norm FROM samples "
            "WHERE cell_key = ? ORDER BY idx",
            (cell_key,),
        ).fetchall()
        return _to_result(rows)

    def cell_seconds(self, cell_key: str) -> float:
        (total,) = self._conn.execute(
            "SELECT COALESCE(SUM(seconds), 0) FROM batches WHERE cell_key = ?", (cell_key,)
        ).fetchone()
        return float(total)


def _to_result(rows: list[tuple]) -> BatchResult:
    cols = list(zip(*rows, strict=True)) if rows else [()] * 5
    return BatchResult(
        idx=np.asarray(cols[0], dtype=np.int64),
        label=np.asarray(cols[1], dtype=np.int64),
        clean_pred=np.asarray(cols[2], dtype=np.int64),
        adv_pred=np.asarray(cols[3], dtype=np.int64),
        perturbation_norm=np.asarray(cols[4], dtype=np.float64),
    )


__all__ = ["BatchResult", "ResultStore"]
