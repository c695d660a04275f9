"""Shared plumbing for data sets read from local files: finding the data root, finding
the expected files in it, and the one-sentence error when they are not there.

The root is, in order: ``root=`` in the spec, the ``root`` argument (``--data-root``),
then ``$ROBEVAL_DATA_ROOT``. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from robeval.data.base import DataSource, take_params
from robeval.errors import RobevalError
from robeval.params import ParamValue

ROOT_ENV = "ROBEVAL_DATA_ROOT"


def resolve_root(name: str, spec_root: ParamValue, arg_root: str | os.PathLike[str] | None) -> Path:
    """The data root for dataset ``name``; none given is a :class:`RobevalError`."""
    for candidate in (spec_root, arg_root, os.environ.get(ROOT_ENV)):
        if candidate not in (None, ""):
            return Path(str(candidate)).expanduser()
    raise RobevalError(
        f"dataset {name!r} is read from local files and needs a data root; pass --data-root PATH "
        f"(or {name}:root=PATH) or set {ROOT_ENV} (robeval never downloads data)"
    )


def find_in(dirs: Sequence[Path], name: str, suffixes: Sequence[str] = ("",)) -> Path | None:
    """The first existing ``dir/name+suffix`` over ``dirs`` (outer) and ``suffixes`` (inner)."""
    for folder in dirs:
        for suffix in suffixes:
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def missing_files_error(
    name: str, split: str, expected: Sequence[str], missing: Sequence[str], dirs: Sequence[Path], root: Path
) -> RobevalError:
    """One sentence listing the expected files, the missing ones and the folders searched."""
    searched = " or ".join(str(d) for d in dirs)
    gone = "" if root.is_dir() else f" (the data root {root} does not exist)"
    return RobevalError(
        f"cannot find the {split} files of dataset {name!r}: expected {', '.join(expected)} "
        f"in {searched}{gone}, missing {', '.join(missing)}; copy the files there or point "
        f"--data-root / {ROOT_ENV} at the folder that holds them (robeval never downloads data)"
    )


def file_error(path: Path, problem: str) -> RobevalError:
    """``<path> <problem>; replace it with an intact copy of the original file``."""
    return RobevalError(f"{path} {problem}; replace it with an intact copy of the original file")


class LocalSource(DataSource):
    """A :class:`DataSource` whose files live under a data root (resolved lazily, so that
    :attr:`info` works without one)."""

    dataset_name: ClassVar[str] = ""

    def __init__(self, params: dict[str, ParamValue], root: str | None = None) -> None:
        p = take_params(self.dataset_name, params, {"root": None})
        self._spec_root = p["root"]
        self._arg_root = root

    @property
    def root(self) -> Path:
        """The data root; a :class:`RobevalError` if none was given."""
        return resolve_root(self.dataset_name, self._spec_root, self._arg_root)

    def has_root(self) -> bool:
        """Whether a data root was given at all (by spec, argument or environment)."""
        return any(c not in (None, "") for c in (self._spec_root, self._arg_root, os.environ.get(ROOT_ENV)))
