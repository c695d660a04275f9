"""Loading the CIFAR python pickles without letting a file run code.

:func:`safe_load` uses an unpickler that resolves only the few globals needed to rebuild
numpy arrays of plain (non-object) dtypes, for pickles of protocol 2 (as the original
Python 2 files) to 5, plus ``_codecs.encode`` restricted to latin-1, which Python 3 uses
for bytes in protocol-2 pickles; any other global is refused with a :class:`RobevalError`.
"""

from __future__ import annotations

import codecs
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray, numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray, numeric  # type: ignore[no-redef]

from robeval.errors import RobevalError


class _Refused(Exception):
    """A pickle asked for a global outside the allow-list."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as used by protocol-2 pickles for bytes, and nothing else."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1" or errors != "strict":
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` that refuses object dtypes."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused("numpy.dtype of Python objects")
    return dtype


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """numpy's protocol-5 array constructor, for plain (non-object) dtypes only."""
    if np.dtype(dtype).hasobject:
        raise _Refused("numpy array of Python objects")
    return numeric._frombuffer(buf, dtype, shape, order)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,  # numpy 1.x pickles
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,  # numpy 2.x pickles
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol-5 pickles
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dicts, lists, strings and numbers."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` (Python 2 strings become bytes) with :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, encoding="bytes").load()
    except _Refused as exc:
        raise RobevalError(
            f"refusing to load {path}: it asks for {exc}, which rebuilding numpy arrays never needs "
            "and which could run code; replace it with an original copy of the file"
        ) from None
    except OSError as exc:
        raise RobevalError(f"cannot read {path} ({exc}); check the file and its permissions") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error, MemoryError, UnicodeError) as exc:  # fmt: skip
        raise RobevalError(
            f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); replace it with an "
            "intact copy of the original file"
        ) from None
