"""The files ``robeval train`` writes (checkpoint, epoch log, resume file), checked before
the first epoch, and the one message for a write that fails after one.

A training run must never spend an epoch and then find that it cannot write: the folder is
created and a temporary file written (and removed) there before any data is loaded.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from robeval.errors import RobevalError
from robeval.train.resume import resume_path

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


@dataclass(frozen=True)
class TrainOutputs:
    """Where one training run writes: ``OUT``, ``OUT``'s ``.log.csv`` and ``OUT.resume``."""

    checkpoint: Path
    log: Path
    resume: Path


def train_outputs(out: str | os.PathLike[str]) -> TrainOutputs:
    """The three paths of a run whose checkpoint is ``out``."""
    checkpoint = Path(out).expanduser()
    return TrainOutputs(checkpoint=checkpoint, log=checkpoint.with_suffix(".log.csv"), resume=resume_path(checkpoint))


def check_outputs(outputs: TrainOutputs) -> None:
    """Raise a :class:`RobevalError` unless all three files can be written: ``--out`` is
    not a folder, nothing in the way is a folder, and the folder exists (it is created)
    and takes a new file."""
    checkpoint = outputs.checkpoint
    if checkpoint.is_dir():
        raise RobevalError(
            f"--out must be a checkpoint file path such as {checkpoint / 'model.pt'}, not a directory"
        )
    for path, role in ((outputs.log, "epoch log"), (outputs.resume, "resume file")):
        if path.is_dir():
            raise RobevalError(
                f"{path} is a folder, but training writes its {role} there; move it or choose another --out"
            )
    folder = checkpoint.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=f".{checkpoint.name}.", suffix=".probe", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise RobevalError(
            f"cannot write the checkpoint {checkpoint} ({_reason(exc)}); choose an --out in a folder you can write to"
        ) from None


def write_failed(exc: BaseException, target: Path, *, epoch: int, epochs: int, resume: Path, kept: int) -> RobevalError:
    """The user's error for a file (``target``) that could not be written after ``epoch``
    of ``epochs``; ``kept`` is the last epoch saved in the resume file (0 if none), where
    the same command resumes."""
    cause = _os_error(exc)
    if cause is not None and cause.errno in _NO_SPACE:
        fix = "free disk space"
    elif cause is not None and cause.errno in _NO_PERMISSION:
        fix = "make the folder writable"
    else:
        fix = "fix the disk"
    reason = _reason(cause) if cause is not None else str(exc)
    if kept >= epochs:
        then = f"it resumes from epoch {kept} of {epochs} kept in {resume} and only writes the checkpoint"
    elif kept > 0:
        then = f"it resumes from epoch {kept} of {epochs} kept in {resume}"
    else:
        then = "no epoch is saved yet, so it starts afresh"
    return RobevalError(
        f"cannot write {target} after epoch {epoch} of {epochs} ({reason}); {fix} and run the same command "
        f"again: {then}"
    )


def _os_error(exc: BaseException | None) -> OSError | None:
    """``exc`` or the OSError it was raised from (robeval.atomic turns those into
    :class:`RobevalError` and keeps the original as the context)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")
