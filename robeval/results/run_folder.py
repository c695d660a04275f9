"""The output folder of a run: checked writable before any work, held by one process at a
time, refused to a different run unless asked, and cleared of the tables the run did not
write.

* :func:`ensure_writable_dir`: create the folder and prove it takes a file, so that a
  read-only place or a file in the way fails in a second, not after the attacks.
* :func:`folder_lock`: an exclusive ``flock`` on ``DIR/.robeval.lock`` (holding the pid)
  while a run writes there; a second run into the same folder stops at once.
* :func:`check_reuse`: the tables in a folder describe the ``spec.yaml`` beside them; a
  different run may replace them only with ``overwrite`` (the store is kept either way:
  its cells are keyed by everything that determines their numbers).
* :func:`remove_stale_tables`: after a run, tables of an earlier run that this one did
  not write (``worst_case.csv`` of a ``--worst-case`` run, ``sfa_*.png``, ...) go.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from robeval.atomic import NO_PERMISSION_ERRNOS, NoSpaceError, is_no_space
from robeval.errors import RobevalError

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one run per folder is then the user's care
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".robeval.lock"
STORE_NAME = "store.sqlite"
SPEC_NAME = "spec.yaml"
#: Every table robeval run / transfer writes into its folder (not the store, not the lock).
TABLE_NAMES = (
    SPEC_NAME, "results.csv", "accuracy_eps.csv", "accuracy_eps.md", "samples.csv", "norm_curves.csv",
    "norm_curves.png", "targeted_grid.csv", "worst_case.csv", "autoattack_breakdown.csv", "checks.json",
    "sfa_grid.csv", "sfa_summary.csv", "transfer.csv", "transfer_grid.md", "transfer_samples.csv",
)
TABLE_PATTERNS = ("sfa_*.png", "targeted_*.png", "transfer_*.png")


def ensure_writable_dir(path: str | os.PathLike[str], *, flag: str) -> Path:
    """Create the folder ``path`` (with its parents) and check that a file can be created
    and deleted in it; one :class:`RobevalError` naming the folder and ``flag`` (the
    option that chose it, e.g. ``--out``) otherwise. Returns the folder."""
    folder = Path(path)
    try:
        if folder.exists() and not folder.is_dir():
            raise RobevalError(f"{flag} {folder} is a file, not a folder; pass a folder to {flag} (or move the "
                               "file away)")
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".robeval-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise _folder_error(folder, flag, exc) from None
    return folder


def _folder_error(folder: Path, flag: str, exc: OSError) -> RobevalError:
    reason = exc.strerror or str(exc)
    if is_no_space(exc):
        return NoSpaceError(folder)
    if exc.errno in NO_PERMISSION_ERRNOS:
        return RobevalError(f"cannot write to the folder {folder} ({reason}); pass a writable folder to {flag}")
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return RobevalError(f"cannot create the folder {folder}: a file stands where one of its folders should be; "
                            f"pass another {flag}")
    return RobevalError(f"cannot use the folder {folder} ({reason}); pass another {flag}")


@contextmanager
def folder_lock(folder: Path, *, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``flock`` of ``folder/.robeval.lock``, with
    this process's pid in it) until the block ends; a folder another process holds is
    one :class:`RobevalError` naming that process. The lock goes with the process, so a
    killed run never leaves the folder locked."""
    if fcntl is None:
        yield
        return
    path = folder / LOCK_NAME
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _folder_error(folder, flag, exc) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RobevalError(
                f"another robeval process (pid {_holder(handle)}) is writing to {folder}; wait for it to finish "
                f"or use another {flag}"
            ) from None
        except OSError as exc:  # a file system without locks (some network mounts): run unlocked
            log.warning("cannot lock %s (%s); make sure no other run writes there", folder, exc.strerror or exc)
        else:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(handle)  # releases the lock


def _holder(handle: int) -> str:
    """The pid written in a lock file (``unknown`` while its holder has not written it yet)."""
    try:
        text = os.pread(handle, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


@contextmanager
def run_folder(path: str | os.PathLike[str], *, flag: str = "--out") -> Iterator[Path]:
    """The output folder of one run, writable and locked for the block. A full disk
    anywhere in the block says that finished batches are kept in the folder's store."""
    folder = ensure_writable_dir(path, flag=flag)
    with folder_lock(folder, flag=flag):
        store = folder / STORE_NAME
        try:
            yield folder
        except NoSpaceError as exc:
            raise (exc.with_saved(store) if store.exists() else exc) from None
        except OSError as exc:
            if not is_no_space(exc):
                raise
            written = Path(exc.filename) if exc.filename else folder
            raise NoSpaceError(written, store if store.exists() else None) from None


def check_reuse(
    folder: Path, new: Mapping[str, Any], *, keys: Iterable[str], overwrite: bool, kind: str,
    same: Callable[[str, Any, Any], bool] | None = None, flag: str = "--out",
) -> None:
    """Refuse to write into ``folder`` when its ``spec.yaml`` is that of a different run:
    one whose ``keys`` (those the old spec has) differ from ``new`` (``same(key, old,
    new)`` compares; plain equality by default), or that another command wrote (``kind``
    names the spec's model key: ``models`` for run, ``sources`` for transfer).
    ``overwrite`` lets the new run replace the tables."""
    if overwrite:
        return
    differs = spec_differences(folder / SPEC_NAME, new, keys=keys, kind=kind, same=same)
    if differs:
        raise RobevalError(
            f"{folder} already holds the tables of a different run (differs in: {', '.join(differs)}); use "
            f"another {flag}, or --overwrite to replace those tables (stored batches are kept and reused where "
            "they match)"
        )


def spec_differences(
    path: Path, new: Mapping[str, Any], *, keys: Iterable[str], kind: str,
    same: Callable[[str, Any, Any], bool] | None = None,
) -> list[str]:
    """The settings in which the spec file ``path`` differs from ``new`` (empty when
    there is no such file)."""
    if not path.exists():
        return []
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [f"{SPEC_NAME} (unreadable)"]
    if not isinstance(old, dict):
        return [f"{SPEC_NAME} (unreadable)"]
    if kind not in old:
        other = "robeval transfer" if "sources" in old else "robeval run" if "models" in old else "another command"
        return [f"command ({other} wrote them)"]
    equal = same or (lambda _key, a, b: a == b)
    return [key for key in keys if key in old and not equal(key, old[key], new.get(key))]


def remove_stale_tables(folder: Path, written: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete the tables in ``folder`` (robeval's own names only) that are not among
    ``written``: an earlier run's, which would not describe the new tables. Returns them."""
    keep = {Path(p).resolve() for p in written}
    candidates = [folder / name for name in TABLE_NAMES]
    candidates += [p for pattern in TABLE_PATTERNS for p in sorted(folder.glob(pattern))]
    removed = []
    for path in candidates:
        if path.is_file() and path.resolve() not in keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed tables of an earlier run: %s", ", ".join(p.name for p in removed))
    return removed


__all__ = [
    "LOCK_NAME", "TABLE_NAMES", "check_reuse", "ensure_writable_dir", "folder_lock", "remove_stale_tables",
    "run_folder", "spec_differences",
]
