"""Core data-set types: :class:`DatasetInfo`, the :class:`DataSource` base class, the
``datasets`` registry, spec parsing (:func:`get_source`) and seeded subsets
(:func:`load_dataset`).

Every source returns a whole split as ``(x, y)``: ``x`` float32 ``(N, C, H, W)`` in
``[0, 1]`` and contiguous, ``y`` int64 ``(N,)``. Nothing is ever downloaded.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from robeval.errors import RobevalError
from robeval.params import ParamValue, parse_named
from robeval.registry import Registry

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test")

#: L-inf eps grids: MNIST-like gray digits/shapes and CIFAR/SVHN-like natural images.
EPS_MNIST: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
EPS_CIFAR: tuple[float, ...] = (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set, known without loading any pixels."""

    name: str  # canonical spec string, e.g. "mnist-mini" or "shapes:size=32,channels=3"
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    default_eps: tuple[float, ...]  # L-inf eps grid for `robeval run`
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class DataSource(abc.ABC):
    """One data set with a ``train`` and a ``test`` split.

    Subclasses are registered in :data:`datasets` and constructed as
    ``cls(params, root)``, where ``params`` come from the spec string.
    """

    #: one line shown by ``robeval ls datasets``
    summary: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def info(self) -> DatasetInfo:
        """Name, classes, input shape, eps grid and description."""

    @abc.abstractmethod
    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The split as numpy arrays: x uint8 (scaled by 1/255) or float in [0, 1]
        shaped (N, C, H, W), and integer labels (N,)."""

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        """The whole ``split`` ("train" or "test") as ``(x, y)`` tensors, in file order."""
        check_split(split, self.info.name)
        x, y = self._load(split)
        return to_tensors(x, y, self.info, split)


#: names -> DataSource subclasses (called as ``cls(params, root)``)
datasets: Registry[type[DataSource]] = Registry("dataset")


def check_split(split: str, name: str) -> None:
    """Reject splits other than train/test with a one-sentence fix."""
    if split not in SPLITS:
        raise RobevalError(
            f"unknown split {split!r} for dataset {name!r}; use one of {', '.join(SPLITS)}"
        )


def to_tensors(x: np.ndarray, y: np.ndarray, info: DatasetInfo, split: str) -> tuple[Tensor, Tensor]:
    """Convert loader arrays to the public tensor contract, checking it on the way."""
    where = f"dataset {info.name!r} split {split!r}"
    if x.ndim != 4 or tuple(x.shape[1:]) != info.input_shape:
        raise RobevalError(
            f"{where} has images of shape {tuple(x.shape[1:])} instead of {info.input_shape}; "
            "check the data files"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise RobevalError(f"{where} has {len(y)} labels for {len(x)} images; check the data files")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(info.classes)):
        raise RobevalError(
            f"{where} has labels outside 0..{len(info.classes) - 1}; check the data files"
        )
    if x.dtype == np.uint8:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).div_(255.0)
    else:
        xt = torch.from_numpy(_writable(np.ascontiguousarray(x, dtype=np.float32)))
        if xt.numel() and not (bool(torch.isfinite(xt).all()) and xt.min() >= 0 and xt.max() <= 1):
            raise RobevalError(f"{where} has pixel values outside [0, 1]; check the data files")
    yt = torch.from_numpy(_writable(np.ascontiguousarray(y, dtype=np.int64)))
    return xt, yt


def _writable(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself if writable, else a copy (torch tensors must not alias read-only memory)."""
    return arr if arr.flags.writeable else arr.copy()


def take_params(name: str, params: dict[str, ParamValue], defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge spec ``params`` over ``defaults``; unknown keys and wrong types are rejected."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise RobevalError(
            f"unknown parameter {unknown[0]!r} for dataset {name!r}; known parameters: {known}"
        )
    merged = dict(defaults)
    for key, value in params.items():
        default = defaults[key]
        wants_int = isinstance(default, int) and not isinstance(default, bool)
        if wants_int and (not isinstance(value, int) or isinstance(value, bool)):
            raise RobevalError(
                f"parameter {key}={value!r} of dataset {name!r} must be an integer, "
                f"e.g. {name}:{key}={default}"
            )
        merged[key] = value
    return merged


def int_in_range(name: str, key: str, value: int, low: int, high: int | None = None) -> int:
    """Check ``low <= value <= high`` for an integer spec parameter."""
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise RobevalError(f"parameter {key}={value} of dataset {name!r} must be {bound}; fix the spec")
    return value


def split_spec(spec: str) -> tuple[str, dict[str, ParamValue]]:
    """Parse ``name``, ``name:k=v,...`` and ``imagefolder:PATH[,k=v,...]``."""
    head, colon, rest = spec.strip().partition(":")
    if colon and head.strip().lower() == "imagefolder":
        first, comma, others = rest.partition(",")
        if first.strip() and "=" not in first:
            # a bare path: everything before the first key=value
            if "=" not in rest:
                first, others = rest, ""
            name, params = parse_named(f"imagefolder:{others}", kind="dataset")
            if "root" in params:
                raise RobevalError(
                    f"dataset spec {spec!r} gives the folder twice; write imagefolder:PATH "
                    "or imagefolder:root=PATH"
                )
            params["root"] = first.strip()
            return name, params
    return parse_named(spec, kind="dataset")


def get_source(spec: str, root: str | None = None) -> DataSource:
    """The :class:`DataSource` for ``spec`` (``"mnist-mini"``, ``"shapes:size=32"``,
    ``"cifar10:root=/data"``, ``"imagefolder:/data/pets"``).

    ``root`` is the data root for the local formats (``--data-root``); a ``root=`` in the
    spec overrides it and ``$ROBEVAL_DATA_ROOT`` is the fallback.
    """
    name, params = split_spec(spec)
    factory = datasets.get(name)
    return factory(params, root)


def subset(x: Tensor, y: Tensor, n: int | None, seed: int, what: str = "split") -> tuple[Tensor, Tensor]:
    """``n`` examples drawn without replacement by ``randperm(N, seed)[:n]`` (that order);
    ``n=None`` keeps everything in file order."""
    if n is None:
        return x, y
    idx = subset_indices(len(y), n, seed, what)
    return x[idx].contiguous(), y[idx].contiguous()


def subset_indices(total: int, n: int, seed: int, what: str = "split") -> Tensor:
    """The positions :func:`subset` takes: ``randperm(total, seed)[:n]``."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0 or n > total:
        raise RobevalError(f"cannot take n={n!r} examples from the {what}, which has {total}; use 1..{total}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=gen)[:n]


def load_dataset(
    name: str, split: str = "test", n: int | None = None, seed: int = 0, root: str | None = None
) -> tuple[Tensor, Tensor]:
    """Load ``split`` of data set ``name`` (a spec string), optionally a seeded subset of ``n``.

    Same arguments give identical tensors.
    """
    source = get_source(name, root)
    x, y = source.load(split)
    what = f"{source.info.name} {split} split"
    return subset(x, y, n, seed, what)


def dataset_info(name: str, root: str | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of a spec string, without loading pixels where possible."""
    return get_source(name, root).info
