"""SQLite result store: one row per evaluated point, written batch by batch.

A *cell* is one (model, data subset, attack, eps) combination, named by a hash of
everything that determines its numbers; a minimal-norm attack stores one unbounded
*search* cell from which every eps is read off. A *point* is one test sample, or in
targeted mode one (sample, target class) pair (``target = -1`` when untargeted).
Each batch is written in a single transaction, so a run killed at any moment (even
``kill -9``) leaves only whole batches behind and resumes exactly where it stopped.

Each batch's points are stored with a checksum (``batch_digests``) that every read
verifies, so flipped bytes in the file stop the run instead of changing a number; any
SQLite error (a damaged file, a full disk, a read-only folder) becomes one
:class:`~robeval.errors.RobevalError` that names the file and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from robeval.atomic import NoSpaceError, write_error
from robeval.errors import RobevalError

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_key TEXT PRIMARY KEY, description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, seconds REAL NOT NULL,
    forward INTEGER NOT NULL, backward INTEGER NOT NULL,
    PRIMARY KEY (cell_key, batch)
);
CREATE TABLE IF NOT EXISTS samples (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, idx INTEGER NOT NULL, target INTEGER NOT NULL,
    label INTEGER NOT NULL, clean_pred INTEGER NOT NULL, adv_pred INTEGER NOT NULL,
    l0 REAL NOT NULL, l2 REAL NOT NULL, linf REAL NOT NULL, attack_norm REAL NOT NULL, x_norm REAL NOT NULL,
    PRIMARY KEY (cell_key, idx, target)
);
CREATE TABLE IF NOT EXISTS point_traces (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, idx INTEGER NOT NULL, target INTEGER NOT NULL,
    iterate_adv INTEGER NOT NULL, loss_trend REAL, steps INTEGER NOT NULL,
    PRIMARY KEY (cell_key, idx, target)
);
CREATE TABLE IF NOT EXISTS checks (
    check_key TEXT PRIMARY KEY, findings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_digests (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (cell_key, batch)
);
CREATE TABLE IF NOT EXISTS nonfinite_outputs (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, rows INTEGER NOT NULL,
    PRIMARY KEY (cell_key, batch)
);
CREATE TABLE IF NOT EXISTS device_batches (
    cell_key TEXT NOT NULL, batch INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (cell_key, batch)
);
"""
# point_traces, checks, batch_digests, nonfinite_outputs and device_batches were added without a
# format change: a store written before them simply has no traces (the path indicators then say how
# many points they saw), no checksums (its batches are read unverified), no counts of non-finite
# model outputs and no device batch sizes (the batch size of the cell is reported).
COLUMNS = ("idx", "target", "label", "clean_pred", "adv_pred", "l0", "l2", "linf", "attack_norm", "x_norm")
INT_COLUMNS = frozenset({"idx", "target", "label", "clean_pred", "adv_pred"})
_Method = TypeVar("_Method", bound=Callable[..., Any])


@dataclass(frozen=True)
class BatchResult:
    """Per-point outcomes of one batch (or cell): numpy arrays of equal length.

    ``l0``/``l2``/``linf`` are the norms of the perturbation the attack returned
    (``inf`` where a minimal-norm search found no adversarial); ``attack_norm`` is the
    size in the attack's own measure (the pixel norm, a deformation's field norm, or the
    noise scale); ``x_norm`` is the clean image's norm in the attack's norm (for
    DeepFool's relative perturbation).
    """

    idx: np.ndarray
    target: np.ndarray
    label: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    l0: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    attack_norm: np.ndarray
    x_norm: np.ndarray

    def norm(self, name: str) -> np.ndarray:
        """The perturbation norms in ``l0``, ``l2`` or ``linf``, else the attack's own."""
        return {"l0": self.l0, "l2": self.l2, "linf": self.linf}.get(name, self.attack_norm)

    def take(self, mask: np.ndarray) -> BatchResult:
        return BatchResult(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def replace(self, **arrays: np.ndarray) -> BatchResult:
        return BatchResult(**{f.name: arrays.get(f.name, getattr(self, f.name)) for f in fields(self)})


@dataclass(frozen=True)
class PointTraces:
    """What the attack's own path showed for the points it attacked in one batch (see
    :mod:`robeval.attacks.trace`): whether some iterate was adversarial, the loss trend
    over its last steps (NaN: too few steps or none recorded) and the number of steps."""

    idx: np.ndarray
    target: np.ndarray
    iterate_adv: np.ndarray
    loss_trend: np.ndarray
    steps: np.ndarray

    @classmethod
    def empty(cls) -> PointTraces:
        ints = np.zeros(0, dtype=np.int64)
        return cls(ints, ints.copy(), np.zeros(0, dtype=bool), np.zeros(0), ints.copy())


@dataclass(frozen=True)
class Cost:
    """The work stored for a cell: seconds and forward/backward passes (per image)."""

    seconds: float = 0.0
    forward: int = 0
    backward: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.seconds + other.seconds, self.forward + other.forward, self.backward + other.backward)


def _sqlite_errors(method: _Method) -> _Method:
    """Turn a SQLite error of a :class:`ResultStore` method into the user's one-line error."""

    @functools.wraps(method)
    def guarded(self: ResultStore, *args: Any, **kwargs: Any) -> Any:
        with self.guarded():
            return method(self, *args, **kwargs)

    return guarded  # type: ignore[return-value]


class ResultStore:
    """The SQLite file behind a run directory (``DIR/store.sqlite``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        with self.guarded():
            self._conn = sqlite3.connect(self.path)
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    @_sqlite_errors
    def _open(self) -> None:
        """Check the store's format and create its tables (new stores, or tables added since)."""
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        has_tables = self._conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if has_tables and version != SCHEMA_VERSION:
            raise RobevalError(
                f"{self.path} was written by another robeval version (store format {version}, this one "
                f"reads {SCHEMA_VERSION}); move it away or use another --out"
            )
        with self._conn:
            self._conn.executescript(SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """Run SQLite calls on this store (here or in a module that adds its own table):
        their errors become one :class:`RobevalError` naming the file and the fix."""
        try:
            yield
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError):
            raise  # misuse of the connection or a value SQLite refuses: a bug, not the user's file
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from None

    def error(self, exc: sqlite3.DatabaseError) -> RobevalError:
        """The user's error for a SQLite error on this store."""
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        text = str(exc)
        if name == "SQLITE_FULL" or "disk is full" in text:
            return NoSpaceError(self.path, saved=self.path)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
            return RobevalError(f"{self.path} is in use by another process ({text}); wait for it to finish or "
                                "use another --out")
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly" in text \
                or "unable to open" in text:
            return RobevalError(f"cannot write {self.path} ({text}); make its folder writable or use another --out")
        if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
            return RobevalError(f"reading or writing {self.path} failed ({text}); check the disk and run the same "
                                "command again")
        return self.damaged(text)

    def damaged(self, reason: str) -> RobevalError:
        """The user's error for a store whose content cannot be trusted."""
        return RobevalError(f"{self.path} is damaged ({reason}); move it away (or delete it) and run again to "
                            "start afresh")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_sqlite_errors
    def register_cell(self, cell_key: str, description: dict) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO cells VALUES (?, ?)",
                (cell_key, json.dumps(description, sort_keys=True, default=str)),
            )

    @_sqlite_errors
    def done_batches(self, cell_key: str) -> set[int]:
        rows = self._conn.execute("SELECT batch FROM batches WHERE cell_key = ?", (cell_key,))
        return {int(r[0]) for r in rows}

    @_sqlite_errors
    def write_batch(
        self, cell_key: str, batch: int, cost: Cost, result: BatchResult, traces: PointTraces | None = None,
        *, nonfinite: int | None = None, device_batch: int | None = None,
    ) -> None:
        """Store one batch atomically (points, their checksum, their path traces, how many
        model outputs were non-finite while attacking it, the device batch its points were
        attacked in, and the batch marker in one transaction). ``nonfinite=None``: not
        counted (an earlier count is kept); ``device_batch=None``: nothing was sent to the
        device (none recorded)."""
        arrays = [getattr(result, c) for c in COLUMNS]
        rows = [
            (cell_key, batch, int(i), int(t), int(lab), int(c), int(a), float(l0), float(l2), float(li), float(an),
             float(xn))
            for i, t, lab, c, a, l0, l2, li, an, xn in zip(*arrays, strict=True)
        ]
        trace_rows = [] if traces is None else [
            (cell_key, batch, int(i), int(t), int(bool(a)), None if np.isnan(trend) else float(trend), int(steps))
            for i, t, a, trend, steps in zip(
                traces.idx, traces.target, traces.iterate_adv, traces.loss_trend, traces.steps, strict=True)
        ]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._conn.execute("INSERT OR REPLACE INTO batch_digests VALUES (?, ?, ?)",
                               (cell_key, batch, _digest(result)))
            self._conn.executemany("INSERT OR REPLACE INTO point_traces VALUES (?,?,?,?,?,?,?)", trace_rows)
            if nonfinite:
                self._conn.execute("INSERT OR REPLACE INTO nonfinite_outputs VALUES (?, ?, ?)",
                                   (cell_key, batch, int(nonfinite)))
            elif nonfinite is not None:
                self._conn.execute("DELETE FROM nonfinite_outputs WHERE cell_key = ? AND batch = ?", (cell_key, batch))
            if device_batch is not None:
                self._conn.execute("INSERT OR REPLACE INTO device_batches VALUES (?, ?, ?)",
                                   (cell_key, batch, int(device_batch)))
            self._conn.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?)",
                (cell_key, batch, cost.seconds, cost.forward, cost.backward),
            )

    @_sqlite_errors
    def read_batch(self, cell_key: str, batch: int) -> BatchResult:
        rows = self._conn.execute(
            f"SELECT batch, {', '.join(COLUMNS)} FROM samples WHERE cell_key = ? AND batch = ? ORDER BY idx, target",
            (cell_key, batch),
        ).fetchall()
        digests = self._conn.execute(
            "SELECT batch, digest FROM batch_digests WHERE cell_key = ? AND batch = ?", (cell_key, batch)
        ).fetchall()
        return self._verified(rows, digests)

    @_sqlite_errors
    def read_cell(self, cell_key: str) -> BatchResult:
        rows = self._conn.execute(
            f"SELECT batch, {', '.join(COLUMNS)} FROM samples WHERE cell_key = ? ORDER BY idx, target",
            (cell_key,),
        ).fetchall()
        digests = self._conn.execute(
            "SELECT batch, digest FROM batch_digests WHERE cell_key = ?", (cell_key,)
        ).fetchall()
        return self._verified(rows, digests)

    def _verified(self, rows: list[tuple], digests: list[tuple]) -> BatchResult:
        """The points of ``rows`` (``batch`` first), each batch checked against its stored
        checksum (batches stored before checksums existed are taken as they are)."""
        try:
            batches = np.asarray([r[0] for r in rows], dtype=np.int64)
            result = _to_result([r[1:] for r in rows])
            for batch, digest in digests:
                if _digest(result.take(batches == int(batch))) != digest:
                    raise self.damaged(f"the points of batch {int(batch)} do not match their checksum")
        except (TypeError, ValueError, OverflowError) as exc:  # a value of the wrong type: a damaged page
            raise self.damaged(f"unreadable stored value: {exc}") from None
        return result

    @_sqlite_errors
    def read_traces(self, cell_key: str) -> PointTraces:
        """Every stored path trace of a cell (points attacked in batches written with one)."""
        rows = self._conn.execute(
            "SELECT idx, target, iterate_adv, loss_trend, steps FROM point_traces WHERE cell_key = ? "
            "ORDER BY idx, target", (cell_key,),
        ).fetchall()
        if not rows:
            return PointTraces.empty()
        try:
            idx, target, adv, trend, steps = (np.asarray(c) for c in zip(*rows, strict=True))
            trend = np.array([np.nan if v is None else v for v in trend], dtype=np.float64)  # NULL: no trend
            return PointTraces(idx.astype(np.int64), target.astype(np.int64), adv.astype(bool), trend,
                               steps.astype(np.int64))
        except (TypeError, ValueError, OverflowError) as exc:
            raise self.damaged(f"unreadable stored value: {exc}") from None

    @_sqlite_errors
    def read_checks(self, check_key: str) -> list[dict] | None:
        """Stored attack-failure findings (JSON objects) under ``check_key``, or None."""
        row = self._conn.execute("SELECT findings FROM checks WHERE check_key = ?", (check_key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError) as exc:
            raise self.damaged(f"unreadable stored findings: {exc}") from None

    @_sqlite_errors
    def write_checks(self, check_key: str, findings: list[dict]) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO checks VALUES (?, ?)", (check_key, json.dumps(findings)))

    @_sqlite_errors
    def nonfinite_rows(self, cell_key: str) -> int:
        """How many model outputs (rows of logits) were NaN or inf while the cell's
        stored batches were attacked (0 when none were, or none were counted)."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(rows), 0) FROM nonfinite_outputs WHERE cell_key = ?", (cell_key,)
        ).fetchone()
        return int(row[0])

    @_sqlite_errors
    def device_batch(self, cell_key: str) -> int | None:
        """The smallest device batch the cell's stored batches were attacked in (``None``:
        none recorded, e.g. nothing attacked or a store written before they were)."""
        row = self._conn.execute("SELECT MIN(size) FROM device_batches WHERE cell_key = ?", (cell_key,)).fetchone()
        return None if row[0] is None else int(row[0])

    @_sqlite_errors
    def cell_cost(self, cell_key: str) -> Cost:
        seconds, forward, backward = self._conn.execute(
            "SELECT COALESCE(SUM(seconds), 0), COALESCE(SUM(forward), 0), COALESCE(SUM(backward), 0) "
            "FROM batches WHERE cell_key = ?",
            (cell_key,),
        ).fetchone()
        return Cost(float(seconds), int(forward), int(backward))


def _digest(result: BatchResult) -> str:
    """A checksum of one batch's points, independent of the order they are given in."""
    order = np.lexsort((np.asarray(result.target), np.asarray(result.idx)))
    digest = hashlib.sha256()
    for name in COLUMNS:
        values = np.asarray(getattr(result, name), dtype=np.int64 if name in INT_COLUMNS else np.float64)[order]
        if name not in INT_COLUMNS:
            values = values + 0.0  # -0.0 reads back from SQLite as 0.0
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()[:32]


def _to_result(rows: list[tuple]) -> BatchResult:
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    return BatchResult(**{
        name: np.asarray(col, dtype=np.int64 if name in INT_COLUMNS else np.float64)
        for name, col in zip(COLUMNS, cols, strict=True)
    })


__all__ = ["BatchResult", "Cost", "PointTraces", "ResultStore"]
