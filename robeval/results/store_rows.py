"""A result store's rows for some (cell, batch) pairs, as plain values that travel.

A Ray task (:mod:`robeval.cluster`) computes its batches into a store in memory, seeded
with the rows of the batches the driver already holds for it (a nested attack resumes
from the eps it stopped at), and returns every row it holds; the driver, the only
writer of the run's store, inserts them in one transaction. Every table keyed by
``(cell_key, batch)`` travels, including those other modules add (AutoAttack's
breakdown), so the driver's store ends up exactly as a single-process run leaves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from robeval.results.store import ResultStore

#: Inserted last, so that a batch's marker never precedes its points.
LAST = "batches"


@dataclass(frozen=True)
class StoreRows:
    """Rows per table (with the table's ``CREATE`` statement), and the cells they belong to."""

    tables: dict[str, tuple[str, list[tuple]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(rows) for _, rows in self.tables.values())


def batch_tables(store: ResultStore) -> dict[str, str]:
    """The store's tables keyed by ``(cell_key, batch)``, with their ``CREATE`` statement."""
    with store.guarded():
        rows = store._conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
        tables = {}
        for name, sql in rows:
            columns = [r[1] for r in store._conn.execute(f"PRAGMA table_info({name})").fetchall()]
            if name == "cells" or columns[:2] == ["cell_key", "batch"]:
                tables[name] = sql
    return tables


def export_rows(store: ResultStore, keys: Iterable[str], batches: range | None = None) -> StoreRows:
    """Every row of the cells ``keys`` (their ``cells`` entries too), for the batches in
    ``batches`` (all when ``None``)."""
    keys = list(dict.fromkeys(keys))
    out: dict[str, tuple[str, list[tuple]]] = {}
    marks = ",".join("?" * len(keys))
    with store.guarded():
        for name, sql in batch_tables(store).items():
            query = f"SELECT * FROM {name} WHERE cell_key IN ({marks})"
            args: list = list(keys)
            if name != "cells" and batches is not None:
                query += " AND batch >= ? AND batch < ?"
                args += [batches.start, batches.stop]
            rows = store._conn.execute(query, args).fetchall() if keys else []
            if rows:
                out[name] = (sql, rows)
    return StoreRows(out)


def import_rows(store: ResultStore, rows: StoreRows) -> None:
    """Insert ``rows`` into ``store`` in one transaction (tables it lacks are created;
    a row already there is replaced by the same values)."""
    order = sorted(rows.tables, key=lambda name: name == LAST)
    with store.guarded(), store._conn:
        present = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for name in order:
            sql, values = rows.tables[name]
            if name not in present:
                store._conn.execute(sql)
            if values:
                marks = ",".join("?" * len(values[0]))
                store._conn.executemany(f"INSERT OR REPLACE INTO {name} VALUES ({marks})", values)
