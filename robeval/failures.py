"""The command line's safety net: the one-line message for an error of the machine, not of
robeval's input, that reached the top of a command unhandled.

Library code turns these into a :class:`~robeval.errors.RobevalError` where it writes
(see :mod:`robeval.atomic`, :mod:`robeval.results.store`); this net catches the ones a
path forgot: a full disk, a read-only or forbidden place, a damaged SQLite file. Anything
else is a bug and keeps its traceback (see :mod:`robeval.entry`).
"""

from __future__ import annotations

import errno
import sqlite3

#: errno values of a full disk or an exhausted quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
#: errno values of a place the user may not write.
READ_ONLY = frozenset({errno.EROFS})
NO_PERMISSION = frozenset({errno.EACCES, errno.EPERM})


def describe_failure(exc: BaseException) -> str | None:
    """One sentence naming the fix for ``exc``, or None when ``exc`` is not a failure of
    the disk or of a result store (then it is a bug, or handled elsewhere)."""
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        return _sqlite_error(exc)
    return None


def _where(exc: OSError) -> str:
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f" ({' -> '.join(names)})" if names else ""


def _os_error(exc: OSError) -> str | None:
    if exc.errno in NO_SPACE:
        return (f"no space left on device{_where(exc)}; free some space (finished batches are kept) "
                "or choose another --out, then run the same command again")
    path = exc.filename if exc.filename is not None else "the output"
    if exc.errno in READ_ONLY:
        return f"cannot write {path} (read-only file system); choose another --out"
    if exc.errno in NO_PERMISSION:
        return f"permission denied for {path}; fix its permissions or choose another path (--out for outputs)"
    return None


def _sqlite_error(exc: sqlite3.DatabaseError) -> str | None:
    text = str(exc)
    low = text.lower()
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return None  # misuse of SQLite by robeval: a bug
    if "disk is full" in low or "disk full" in low:
        return ("no space left on device (the result store); free some space (finished batches are kept) "
                "or choose another --out, then run the same command again")
    if "readonly" in low or "read-only" in low:
        return "cannot write the result store (read-only); choose another --out"
    if "locked" in low or "busy" in low:
        return "the result store is in use by another process; wait for it to finish or choose another --out"
    if "unable to open" in low:
        return "cannot open the result store; choose an --out folder you can write"
    return f"the result store is damaged ({text}); move store.sqlite out of the --out folder or choose another --out"
