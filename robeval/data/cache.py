"""A small on-disk cache of parsed arrays (compressed ``.npz``), written atomically.

The cache folder is ``$ROBEVAL_CACHE`` if set, else ``~/.cache/robeval``. A missing,
unreadable or unwritable cache is never an error: the data are simply rebuilt.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from robeval.atomic import atomic_open
from robeval.errors import RobevalError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    env = os.environ.get("ROBEVAL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "robeval"


def cache_path(name: str) -> Path:
    """Where the cache entry ``name`` (e.g. ``"mnist-mini-v1"``) lives."""
    return cache_dir() / f"{name}.npz"


def load_arrays(name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The cached arrays of entry ``name``, or None if absent, unreadable or lacking a key."""
    path = cache_path(name)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not all(k in npz.files for k in keys):
                log.warning("cache file %s lacks %s; rebuilding it", path, keys)
                return None
            return {k: npz[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("cache file %s is unreadable (%s); rebuilding it", path, exc)
        return None


def save_arrays(name: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write entry ``name`` atomically (temp file + ``os.replace``); None if that failed."""
    path = cache_path(name)
    try:
        with atomic_open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        log.info("cached %s at %s", name, path)
        return path
    except (OSError, RobevalError) as exc:  # atomic_open turns file-system errors into RobevalError
        log.warning("could not write cache file %s (%s); continuing without it", path, exc)
        return None
