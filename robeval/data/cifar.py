"""``cifar10`` and ``cifar100`` from the official "python version" pickles
(``cifar-10-batches-py/`` resp. ``cifar-100-python/``), found in the data root or with
the root being that folder. The pickles are read with a restricted unpickler.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robeval.data.base import EPS_CIFAR, DatasetInfo, datasets
from robeval.data.local import LocalSource, file_error, find_in, missing_files_error
from robeval.data.safepickle import safe_load

log = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASSES: tuple[str, ...] = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)


def _as_str(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one CIFAR batch file, validated."""
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise file_error(path, f"holds a {type(obj).__name__}, not the dict of a CIFAR batch")
    batch = {_as_str(k): v for k, v in obj.items()}
    if "data" not in batch or label_key not in batch:
        raise file_error(path, f"lacks the keys 'data' and {label_key!r} of a CIFAR batch")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise file_error(path, f"has 'data' of shape {shape} instead of uint8 (N, 3072)")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise file_error(path, f"has {label_key!r} that is not a list of integers")
    if len(labels) != len(data):
        raise file_error(path, f"has {len(labels)} labels for {len(data)} images")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise file_error(path, f"has labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


class CifarSource(LocalSource):
    """A CIFAR data set in the official python-pickle layout."""

    folder: ClassVar[str] = ""
    files: ClassVar[dict[str, tuple[str, ...]]] = {}
    meta_file: ClassVar[str] = ""
    meta_key: ClassVar[str] = ""
    label_key: ClassVar[str] = ""
    standard_classes: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    _classes: tuple[str, ...] | None = None

    def _dirs(self) -> list[Path]:
        root = self.root
        return [root / self.folder, root]

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.dataset_name,
            classes=self._class_names(),
            input_shape=(3, 32, 32),
            default_eps=EPS_CIFAR,
            description=self.description,
        )

    def _class_names(self) -> tuple[str, ...]:
        """Names from the meta file when the root has one, else the standard names."""
        if self._classes is None:
            self._classes = self.standard_classes
            meta = find_in(self._dirs(), self.meta_file) if self.has_root() else None
            if meta is not None:
                obj = safe_load(meta)
                names = None
                if isinstance(obj, dict):
                    names = obj.get(self.meta_key.encode(), obj.get(self.meta_key))
                if not isinstance(names, list) or len(names) != len(self.standard_classes):
                    raise file_error(meta, f"lacks a list of {len(self.standard_classes)} {self.meta_key!r}")
                self._classes = tuple(str(_as_str(n)) for n in names)
        return self._classes

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        dirs = self._dirs()
        names = self.files[split]
        folder = next((d for d in dirs if all((d / n).is_file() for n in names)), None)
        if folder is None:
            expected = [n for group in self.files.values() for n in group]
            best = max(dirs, key=lambda d: sum((d / n).is_file() for n in names))
            missing = [n for n in names if not (best / n).is_file()]
            raise missing_files_error(self.dataset_name, split, expected, missing, dirs, dirs[-1])
        parts = [read_batch(folder / n, self.label_key, len(self.standard_classes)) for n in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        log.info("read %d %s images of %s from %s", len(images), split, self.dataset_name, folder)
        return images, labels


@datasets.register("cifar10")
class Cifar10(CifarSource):
    """CIFAR-10 from the python-version pickles."""

    summary = "CIFAR-10 from local python pickles (ROOT/cifar-10-batches-py; never downloaded)"
    dataset_name = "cifar10"
    folder = "cifar-10-batches-py"
    files = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
    meta_file = "batches.meta"
    meta_key = "label_names"
    label_key = "labels"
    standard_classes = CIFAR10_CLASSES
    description = "CIFAR-10 32x32 colour images, 50,000 train / 10,000 test, read from local pickles"


@datasets.register("cifar100")
class Cifar100(CifarSource):
    """CIFAR-100 (fine labels) from the python-version pickles."""

    summary = "CIFAR-100 (fine labels) from local python pickles (ROOT/cifar-100-python; never downloaded)"
    dataset_name = "cifar100"
    folder = "cifar-100-python"
    files = {"train": ("train",), "test": ("test",)}
    meta_file = "meta"
    meta_key = "fine_label_names"
    label_key = "fine_labels"
    standard_classes = CIFAR100_CLASSES
    description = (
        "CIFAR-100 32x32 colour images, 100 fine classes, 50,000 train / 10,000 test, from local pickles"
    )
