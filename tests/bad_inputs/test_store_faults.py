"""Faults of the result store and the disk under ``robeval run`` (issue 12): a damaged
``store.sqlite`` (garbage bytes, a random file, a silently changed point, an undecodable
row) is one error naming the file and the fix, wherever SQLite or the checksum notices;
a full disk mid-run (SQLite's ``database or disk is full``, ENOSPC / EDQUOT in the atomic
table writes) is one error saying what is saved, and the same command after the fault
ends with the tables of an uninterrupted run."""

from __future__ import annotations

import errno
import os
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from robeval import atomic
from robeval.errors import RobevalError
from robeval.results import store as store_module
from tests.bad_inputs.run_helpers import assert_ok, assert_one_error, invoke, same_tables

#: 40 digits in batches of 10, two attacks at two budgets: 16 stored batches.
RUN = ["--attack", "fgsm", "--attack", "pgd:steps=2", "--eps", "0,0.1", "--n", "40", "--batch-size", "10",
       "--device", "cpu", "--quiet", "--checks", "off"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, digits_checkpoint) -> Path:
    """The tables of an uninterrupted run, to compare with."""
    out = tmp_path_factory.mktemp("clean") / "run"
    assert_ok(invoke("run", digits_checkpoint, *RUN, "--out", out))
    return out


def _stored_batches(out: Path) -> int:
    with sqlite3.connect(out / "store.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]


# --- 2a. a damaged store -----------------------------------------------------------------------


def _garbage_in_the_header_pages(store: Path) -> None:
    data = bytearray(store.read_bytes())
    data[100:400] = random.Random(0).randbytes(300)
    store.write_bytes(bytes(data))


def _random_file(store: Path) -> None:
    store.write_bytes(random.Random(1).randbytes(4096))


def _silently_changed_point(store: Path) -> None:
    """A flipped bit SQLite cannot see: one stored prediction changed in place."""
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE samples SET adv_pred = (adv_pred + 1) % 10 WHERE rowid = "
                     "(SELECT rowid FROM samples ORDER BY rowid LIMIT 1 OFFSET 7)")


def _undecodable_text(store: Path) -> None:
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE cells SET description = CAST(x'ff00fe' AS TEXT)")
        conn.execute("INSERT OR REPLACE INTO checks VALUES ('k', CAST(x'c3' AS TEXT))")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_garbage_in_the_header_pages, ""),
        (_random_file, "file is not a database"),
        (_silently_changed_point, "do not match their checksum"),
    ],
    ids=["bytes-100-400-garbage", "4k-random-bytes", "point-changed-behind-sqlite"],
)
def test_a_damaged_store_is_one_error_naming_the_fix(clean_run, digits_checkpoint, tmp_path, damage, reason) -> None:
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    damage(out / "store.sqlite")
    before = (out / "results.csv").read_bytes()
    line = assert_one_error(invoke("run", digits_checkpoint, *RUN, "--out", out),
                            f"{out / 'store.sqlite'} is damaged (", reason,
                            "move it away (or delete it) and run again to start afresh")
    assert "\n" not in line and (out / "results.csv").read_bytes() == before, "no table written from it"


def test_a_store_damaged_where_only_a_later_read_looks_is_one_error(clean_run, tmp_path) -> None:
    """Text SQLite cannot decode, met by a read in the middle of the run, not at opening."""
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    _undecodable_text(out / "store.sqlite")
    with store_module.ResultStore(out / "store.sqlite") as store:  # opens fine
        with pytest.raises(RobevalError, match="store.sqlite is damaged .*; move it away"):
            store.read_checks("k")


def test_after_moving_a_damaged_store_away_the_run_starts_afresh(clean_run, digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    _silently_changed_point(out / "store.sqlite")
    assert_one_error(invoke("run", digits_checkpoint, *RUN, "--out", out), "is damaged")
    (out / "store.sqlite").rename(tmp_path / "damaged.sqlite")
    assert_ok(invoke("run", digits_checkpoint, *RUN, "--out", out))
    same_tables(out, clean_run)


# --- 2b. a full disk -------------------------------------------------------------------------------


class _FullAfter:
    """A SQLite connection whose (N+1)-th batch of points finds the disk full."""

    def __init__(self, conn: sqlite3.Connection, batches: int) -> None:
        self._conn, self._left = conn, batches

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> Any:
        return self._conn.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._conn.__exit__(*exc)

    def executemany(self, sql: str, rows: Any) -> Any:
        if sql.startswith("INSERT OR REPLACE INTO samples"):
            if self._left == 0:
                raise sqlite3.OperationalError("database or disk is full")
            self._left -= 1
        return self._conn.executemany(sql, rows)


def _sqlite_full(monkeypatch: pytest.MonkeyPatch) -> str:
    connect = sqlite3.connect
    monkeypatch.setattr(store_module.sqlite3, "connect", lambda *a, **k: _FullAfter(connect(*a, **k), 5))
    return "store.sqlite"


def _replace_enospc(monkeypatch: pytest.MonkeyPatch) -> str:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "replace", full)
    return "spec.yaml"


class _QuotaFile:
    """A file whose writes find the user's quota exhausted."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _QuotaFile:
        self._handle.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._handle.__exit__(*exc)

    def write(self, data: Any) -> int:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


def _write_edquot(monkeypatch: pytest.MonkeyPatch) -> str:
    fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: _QuotaFile(fdopen(*a, **k)))
    return "spec.yaml"


@pytest.mark.parametrize("fault", [_sqlite_full, _replace_enospc, _write_edquot],
                         ids=["sqlite-disk-full-mid-run", "enospc-replacing-a-table", "edquot-writing-a-table"])
def test_a_full_disk_keeps_the_finished_batches_and_the_same_command_finishes(
    fault: Callable[[pytest.MonkeyPatch], str], clean_run, digits_checkpoint, tmp_path, monkeypatch,
) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        written = fault(patch)
        assert_one_error(invoke("run", digits_checkpoint, *RUN, "--out", out),
                         f"no space left on device writing {out / written}; finished batches are saved in "
                         f"{out / 'store.sqlite'}, free space and run the same command again")
    assert not (out / "results.csv").exists()
    assert _stored_batches(out) == (5 if written == "store.sqlite" else _stored_batches(clean_run))
    assert_ok(invoke("run", digits_checkpoint, *RUN, "--out", out))  # the disk has room again
    same_tables(out, clean_run)
