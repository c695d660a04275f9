"""``svhn``: Street View House Numbers from the official cropped-digit MATLAB files
``train_32x32.mat`` and ``test_32x32.mat`` (in the data root, or ``ROOT/svhn``).

Label 10 in the files means digit 0 and is mapped to 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from robeval.data.base import EPS_CIFAR, DatasetInfo, datasets
from robeval.data.local import LocalSource, file_error, find_in, missing_files_error

log = logging.getLogger(__name__)

SVHN_FILES: dict[str, str] = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels 0..9 (N,) from one SVHN ``.mat`` file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise file_error(path, "is a MATLAB v7.3 (HDF5) file, not the official v5 file") from None
    except (OSError, ValueError, TypeError, EOFError, KeyError) as exc:
        raise file_error(path, f"is not a readable MATLAB file ({exc})") from None
    if "X" not in mat or "y" not in mat:
        raise file_error(path, "lacks the variables 'X' and 'y' of an SVHN file")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise file_error(path, f"has 'X' of shape {x.shape} instead of (32, 32, 3, N)")
    if x.dtype != np.uint8:
        numeric = np.issubdtype(x.dtype, np.number)
        if not numeric or x.size and (x.min() < 0 or x.max() > 255 or np.any(x != np.round(x))):
            raise file_error(path, f"has 'X' of type {x.dtype} that is not 8-bit pixel values")
        x = x.astype(np.uint8)
    n = x.shape[3]
    if y.size != n or (y.ndim == 2 and y.shape[1] != 1) or y.ndim > 2:
        raise file_error(path, f"has 'y' of shape {y.shape} for {n} images instead of ({n}, 1)")
    if not np.issubdtype(y.dtype, np.number):
        raise file_error(path, f"has 'y' of type {y.dtype} instead of integer labels")
    y = y.reshape(-1)
    if n and (np.any(y != np.round(y)) or y.min() < 0 or y.max() > 10):
        raise file_error(path, "has labels outside 1..10 (10 meaning digit 0)")
    labels = y.astype(np.int64) % 10
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return images, labels


@datasets.register("svhn")
class Svhn(LocalSource):
    """SVHN cropped digits from the official ``*_32x32.mat`` files."""

    summary = "SVHN cropped digits from local train_32x32.mat / test_32x32.mat (never downloaded)"
    dataset_name = "svhn"

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="svhn",
            classes=tuple(str(d) for d in range(10)),
            input_shape=(3, 32, 32),
            default_eps=EPS_CIFAR,
            description="SVHN 32x32 house-number digits, 73,257 train / 26,032 test, from local .mat files",
        )

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        root = self.root
        dirs = [root, root / "svhn", root / "SVHN"]
        path = find_in(dirs, SVHN_FILES[split])
        if path is None:
            expected = list(SVHN_FILES.values())
            raise missing_files_error("svhn", split, expected, [SVHN_FILES[split]], dirs, root)
        images, labels = read_svhn_mat(path)
        log.info("read %d %s images of svhn from %s", len(images), split, path)
        return images, labels
