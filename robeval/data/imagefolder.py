"""``imagefolder``: images sorted into class subfolders, as in torchvision's ImageFolder.

``imagefolder:PATH`` or ``imagefolder:root=PATH,size=32,channels=3``. If PATH has
``train/`` and ``test/`` (or ``val/``) subfolders those are the splits; otherwise the whole
folder is the test split. Classes are the sorted subfolder names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from robeval.data.base import (
    EPS_CIFAR,
    DatasetInfo,
    DataSource,
    datasets,
    int_in_range,
    take_params,
)
from robeval.data.local import ROOT_ENV
from robeval.errors import RobevalError
from robeval.params import ParamValue

log = logging.getLogger(__name__)

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
DEFAULTS: dict[str, ParamValue] = {"root": None, "size": None, "channels": 3}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


def _read_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3), resized bilinearly to size x size if given."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise RobevalError(f"cannot read image {path} ({exc}); remove or replace the file") from None


@datasets.register("imagefolder")
class ImageFolder(DataSource):
    """Class-subfolder images from a local folder."""

    summary = "images in class subfolders: imagefolder:PATH or imagefolder:root=PATH,size=32,channels=3"

    def __init__(self, params: dict[str, ParamValue], root: str | None = None) -> None:
        p = take_params("imagefolder", params, DEFAULTS)
        folder = p["root"] or root or os.environ.get(ROOT_ENV)
        if not folder:
            raise RobevalError(
                "dataset 'imagefolder' needs a folder; write imagefolder:PATH, where PATH holds "
                "one subfolder of images per class"
            )
        self.folder = Path(str(folder)).expanduser().resolve()
        size = p["size"]
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise RobevalError(
                f"parameter size={size!r} of dataset 'imagefolder' must be an integer, e.g. size=32"
            )
        self.size = None if size is None else int_in_range("imagefolder", "size", size, 1, 4096)
        self.channels = p["channels"]
        if self.channels not in (1, 3):
            raise RobevalError(f"parameter channels={self.channels!r} of dataset 'imagefolder' must be 1 or 3")
        if not self.folder.is_dir():
            raise RobevalError(
                f"image folder {self.folder} does not exist; pass an existing folder as imagefolder:PATH"
            )
        self.split_dirs = self._find_splits()
        self.classes = tuple(sorted({d.name for f in self.split_dirs.values() for d in _visible_dirs(f)}))
        if not self.classes:
            where = " or ".join(str(f) for f in self.split_dirs.values())
            raise RobevalError(f"no class subfolders in {where}; put the images in {where}/CLASS_NAME/")
        self._files: dict[str, list[tuple[Path, int]]] = {}
        self._shape: tuple[int, int, int] | None = None

    def _find_splits(self) -> dict[str, Path]:
        train = self.folder / "train"
        test = next((self.folder / n for n in ("test", "val") if (self.folder / n).is_dir()), None)
        if train.is_dir() and test is not None:
            return {"train": train, "test": test}
        if train.is_dir() or test is not None:
            raise RobevalError(
                f"image folder {self.folder} has only one of train/ and test/ (or val/); add the "
                "other, or drop the split folders and put the class folders at the top"
            )
        return {"test": self.folder}

    def files(self, split: str) -> list[tuple[Path, int]]:
        """``(image path, label)`` pairs of ``split`` in sorted order."""
        if split not in self.split_dirs:
            raise RobevalError(
                f"image folder {self.folder} has no train split; add train/ and test/ subfolders "
                "(each with class folders) to train on it"
            )
        if split not in self._files:
            top = self.split_dirs[split]
            pairs = [
                (path, label)
                for label, cls in enumerate(self.classes)
                if (top / cls).is_dir()
                for path in _image_files(top / cls)
            ]
            if not pairs:
                kinds = ", ".join(sorted(EXTENSIONS))
                raise RobevalError(f"no images ({kinds}) under {top}/CLASS_NAME/; add some")
            self._files[split] = pairs
        return self._files[split]

    @property
    def info(self) -> DatasetInfo:
        parts = [f"root={self.folder}"]
        if self.size is not None:
            parts.append(f"size={self.size}")
        if self.channels != 3:
            parts.append(f"channels={self.channels}")
        return DatasetInfo(
            name="imagefolder:" + ",".join(parts),
            classes=self.classes,
            input_shape=self._input_shape(),
            default_eps=EPS_CIFAR,
            description=f"images in class subfolders of {self.folder} ({', '.join(self.split_dirs)} split)",
        )

    def _input_shape(self) -> tuple[int, int, int]:
        if self._shape is None:
            if self.size is not None:
                height = width = self.size
            else:
                from PIL import Image

                first = self.files("test")[0][0]
                try:
                    with Image.open(first) as img:
                        width, height = img.size
                except (OSError, ValueError, SyntaxError) as exc:
                    raise RobevalError(
                        f"cannot read image {first} ({exc}); remove or replace the file"
                    ) from None
            self._shape = (self.channels, height, width)
        return self._shape

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        pairs = self.files(split)
        mode = "L" if self.channels == 1 else "RGB"
        _, height, width = self._input_shape()
        images = np.empty((len(pairs), self.channels, height, width), dtype=np.uint8)
        for i, (path, _) in enumerate(pairs):
            arr = _read_image(path, mode, self.size)
            if arr.shape[:2] != (height, width):
                got = f"{arr.shape[1]}x{arr.shape[0]}"
                raise RobevalError(
                    f"images under {self.folder} differ in size ({path} is {got}, not {width}x{height}); "
                    f"pass a size, e.g. imagefolder:root={self.folder},size={max(height, width)}"
                )
            images[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        labels = np.asarray([label for _, label in pairs], dtype=np.int64)
        log.info("read %d %s images from %s", len(images), split, self.split_dirs[split])
        return images, labels
