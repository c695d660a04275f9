"""Checks that an output path can be written, made before any work starts.

A command that computes for a minute and then fails on a read-only ``--out`` wastes the
minute and, before these checks, ended in a traceback. The checks create nothing: for a
folder that does not exist yet they test its nearest existing ancestor, where the command
would create it, by creating (and removing) a temporary file there.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from robeval.errors import RobevalError


def _reason(exc: OSError) -> str:
    """``permission denied``, ``read-only file system``, ... for the user."""
    code = exc.errno if exc.errno is not None else 0
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _check_folder(folder: Path, flag: str, shown: Path) -> None:
    """Raise unless ``folder`` exists and takes a new file, or can be created."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise RobevalError(f"{flag} {shown} cannot be written: {existing} is a file, not a folder; "
                           f"pass a path in a folder you can write to")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".robeval-write-check-"):
            pass
    except OSError as exc:
        raise RobevalError(f"{flag} {shown} cannot be written ({existing}: {_reason(exc)}); "
                           "pass a path in a folder you can write to") from None


def check_output_file(path: Path | str, flag: str, *, example: str = "out.csv") -> None:
    """Raise a :class:`RobevalError` unless ``path`` can be written as a file: it is not a
    folder, and its folder exists and is writable or can be created. ``flag`` (e.g.
    ``"--out"``) names the option in the message, ``example`` a file name to suggest."""
    path = Path(path)
    if path.is_dir():
        raise RobevalError(f"{flag} {path} is a folder; pass a file path such as {path / example}")
    _check_folder(path.parent, flag, path)


def check_output_dir(path: Path | str, flag: str) -> None:
    """Raise a :class:`RobevalError` unless ``path`` is a writable folder or can be
    created as one. ``flag`` names the option in the message."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RobevalError(f"{flag} {path} is a file, not a folder; pass a folder path")
    _check_folder(path, flag, path)

