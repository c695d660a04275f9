"""Atomic file writes: a temp file in the target folder, fsync, then ``os.replace``.

Readers (and a resumed run) never see half a file, whatever moment a process dies. A
write that fails (full disk, read-only folder) leaves the old file as it was and raises
one :class:`RobevalError` naming the file and the fix.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from robeval.errors import RobevalError

#: errno values of a full disk or an exhausted quota.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: errno values of a folder or file the user may not write.
NO_PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class NoSpaceError(RobevalError):
    """The disk (or the user's quota) filled up while writing ``path``. ``saved`` names
    where finished work is kept (a run's result store), if anywhere."""

    def __init__(self, path: str | os.PathLike[str], saved: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.saved = None if saved is None else Path(saved)
        where = f"finished batches are saved in {self.saved}, " if self.saved is not None else ""
        super().__init__(
            f"no space left on device writing {self.path}; {where}free space and run the same command again"
        )

    def with_saved(self, saved: str | os.PathLike[str]) -> NoSpaceError:
        """The same error, saying that finished work is kept in ``saved``."""
        return self if self.saved is not None else NoSpaceError(self.path, saved)


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError of a full disk or quota."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def write_error(path: str | os.PathLike[str], exc: OSError) -> RobevalError:
    """The user's error for an OSError raised while writing ``path``."""
    if exc.errno in NO_SPACE_ERRNOS:
        return NoSpaceError(path)
    reason = exc.strerror or str(exc)
    if exc.errno in NO_PERMISSION_ERRNOS:
        return RobevalError(f"cannot write {path} ({reason}); make its folder writable or write somewhere else")
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return RobevalError(f"cannot write {path}: a file stands where one of its folders should be; "
                            "move that file away or write somewhere else")
    return RobevalError(f"writing {path} failed ({reason}); check the disk and run the same command again")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` (parents created) that replaces ``path`` on success.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600. An
    OSError of the file system (here, or a full disk while the caller writes) becomes a
    :class:`RobevalError` (:class:`NoSpaceError` for a full disk); ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    in_body = False
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            in_body = True
            yield handle
            in_body = False
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # our own file operations, or the caller's writes when the disk is full; any other
        # error of the caller's (its own reads, its bugs) passes unchanged
        if isinstance(exc, OSError) and (not in_body or is_no_space(exc)):
            raise write_error(path, exc) from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
