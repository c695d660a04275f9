"""``mnist`` and ``fashion-mnist`` from the original IDX files (optionally gzipped), found
in the data root itself or in torchvision's layout ``ROOT/MNIST/raw`` resp.
``ROOT/FashionMNIST/raw``. The IDX format is parsed here with numpy.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from robeval.data.base import EPS_MNIST, DatasetInfo, datasets
from robeval.data.local import LocalSource, file_error, find_in, missing_files_error

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SUFFIXES = ("", ".gz")

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_EPS: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1, 0.2)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (whatever its name)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise file_error(path, f"cannot be read or decompressed ({exc})") from None
    return raw


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file whose magic number must be ``magic``."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise file_error(path, f"is truncated ({len(raw)} bytes, no IDX header)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "image" if magic == IMAGES_MAGIC else "label"
        raise file_error(path, f"is not an IDX {kind} file (magic number {found}, expected {magic})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise file_error(path, "is truncated inside its IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)
    if len(raw) != header + size:
        what = "is truncated" if len(raw) < header + size else "has trailing bytes"
        raise file_error(path, f"{what} ({len(raw) - header} data bytes for dimensions {dims})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


class IdxSource(LocalSource):
    """A 28x28 gray 10-class data set stored as IDX files."""

    subdir: ClassVar[str] = ""
    classes: ClassVar[tuple[str, ...]] = ()
    eps: ClassVar[tuple[float, ...]] = EPS_MNIST
    description: ClassVar[str] = ""

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.dataset_name,
            classes=self.classes,
            input_shape=(1, 28, 28),
            default_eps=self.eps,
            description=self.description,
        )

    def _dirs(self) -> list[Path]:
        root = self.root
        return [root, root / self.subdir / "raw"]

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        dirs = self._dirs()
        names = IDX_FILES[split]
        paths = [find_in(dirs, name, SUFFIXES) for name in names]
        if any(p is None for p in paths):
            expected = [f"{n}[.gz]" for pair in IDX_FILES.values() for n in pair]
            missing = [f"{n}[.gz]" for n, p in zip(names, paths, strict=True) if p is None]
            raise missing_files_error(self.dataset_name, split, expected, missing, dirs, dirs[0])
        images_path, labels_path = paths[0], paths[1]
        assert images_path is not None and labels_path is not None
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise file_error(images_path, f"holds images of size {images.shape[1:]} instead of 28x28")
        if len(labels) != len(images):
            raise file_error(
                labels_path, f"holds {len(labels)} labels but {images_path.name} holds {len(images)} images"
            )
        if len(labels) and int(labels.max()) >= len(self.classes):
            top = len(self.classes) - 1
            raise file_error(labels_path, f"holds label {int(labels.max())}, outside 0..{top}")
        log.info("read %d %s images of %s from %s", len(images), split, self.dataset_name, images_path.parent)
        return images[:, None], labels.astype(np.int64)


@datasets.register("mnist")
class Mnist(IdxSource):
    """MNIST (70,000 28x28 digits) from local IDX files."""

    summary = "MNIST from local IDX files (ROOT or ROOT/MNIST/raw; never downloaded)"
    dataset_name = "mnist"
    subdir = "MNIST"
    classes = tuple(str(d) for d in range(10))
    description = "MNIST handwritten digits, 60,000 train / 10,000 test, read from local IDX files"


@datasets.register("fashion-mnist")
class FashionMnist(IdxSource):
    """Fashion-MNIST (70,000 28x28 clothing images) from local IDX files."""

    summary = "Fashion-MNIST from local IDX files (ROOT or ROOT/FashionMNIST/raw; never downloaded)"
    dataset_name = "fashion-mnist"
    subdir = "FashionMNIST"
    classes = FASHION_CLASSES
    eps = FASHION_EPS
    description = "Fashion-MNIST clothing images, 60,000 train / 10,000 test, read from local IDX files"
