"""``lrc-data``: the LRC attack with the data set's covariance, from the command line.

Roth, Nowozin, Lucchi and Hofmann, "Adversarially Robust Training through Structured
Gradient Regularization" (2018), Sec. 4.3, last paragraph: besides the covariance
function ``exp(-r/zeta)`` (:class:`~robeval.attacks.noise.LRC`), the LRC attack was run
"with the covariance matrix computed from the CIFAR10 training set". Here the covariance
is estimated from the training split of ``dataset`` (all of it, or a seeded subset of
``n`` images), normalised to a mean diagonal entry of 1 so that ``eps`` is the per-entry
noise std as for ``lrc`` (:func:`~robeval.attacks.lrc_sampling.estimate_covariance`),
and sampled through its dense eigendecomposition
(:func:`~robeval.attacks.lrc_sampling.covariance_factor`), worst of ``samples`` draws
per point like every noise attack (:mod:`robeval.attacks.noise`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from torch import Tensor

from robeval.attacks.lrc_sampling import covariance_factor, estimate_covariance
from robeval.attacks.noise import CovarianceNoise
from robeval.attacks.registry import attacks
from robeval.errors import RobevalError

#: The largest image (entries per image) whose covariance is built densely: a ``D x D``
#: float64 matrix and its eigendecomposition (CIFAR's 3,072 entries: 75 MB). Larger
#: images have no dense data covariance here; ``lrc`` (the covariance function, sampled
#: by FFT) covers any size.
DENSE_MAX_ENTRIES = 4096


@lru_cache(maxsize=4)
def data_covariance_factor(
    dataset: str, n: int | None, root: str | None, normalize: bool
) -> tuple[Tensor, tuple[int, ...]]:
    """``L`` with ``L L^T`` the (normalised) covariance of the training split of
    ``dataset`` (its seeded subset of ``n`` images, seed 0), and the image shape. Cached
    per process: a run builds it once, whatever the number of cells and batches."""
    from robeval.data import dataset_info, load_dataset

    entries = math.prod(dataset_info(dataset, root).input_shape)
    if entries > DENSE_MAX_ENTRIES:
        raise ValueError(f"lrc-data builds a dense {entries} x {entries} covariance for {dataset}'s images; "
                         f"it stops at {DENSE_MAX_ENTRIES} entries per image. Use lrc:zeta=Z (the covariance "
                         "function, any image size) instead")
    x, _ = load_dataset(dataset, split="train", n=n, seed=0, root=root)
    return covariance_factor(estimate_covariance(x, normalize)), tuple(x.shape[1:])


@attacks.register("lrc-data")
@dataclass(frozen=True, kw_only=True)
class LRCData(CovarianceNoise):
    """Gaussian noise with the data set's covariance, worst of ``samples`` draws (SGR,
    Sec. 4.3: the LRC attack "with the covariance matrix computed from the CIFAR10
    training set").

    ``dataset`` (required): the data set whose training split gives the covariance,
    normally the one the model was trained on, e.g. ``lrc-data:dataset=mnist-mini``;
    ``n`` (``none``: the whole split, as the paper) a seeded subset of that many training
    images; ``root`` the folder of a data set read from disk; ``normalize`` (true) scales
    the covariance to a mean diagonal entry of 1, so ``eps`` is the per-entry noise std
    as for ``lrc``. Dense: images of up to 4,096 entries (CIFAR's 3,072 included).
    ``norm = "scale"``: eps is a noise scale, not a bound; only the box is enforced.
    """

    name: ClassVar[str] = "lrc-data"
    dataset: str | None = None
    n: int | None = None
    root: str | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        self._check_samples()
        if not self.dataset:
            raise ValueError("lrc-data needs the data set whose covariance it draws from: add dataset=NAME, "
                             "e.g. lrc-data:dataset=mnist-mini (the one the model was trained on)")
        if self.n is not None and self.n < 2:
            raise ValueError(f"n must be >= 2 images to estimate a covariance (or none for the whole split); "
                             f"got {self.n}")
        factor, shape = data_covariance_factor(self.dataset, self.n, self.root, self.normalize)
        object.__setattr__(self, "_factor", factor)
        object.__setattr__(self, "_shape", shape)

    def _checked_factor(self, shape: tuple[int, ...]) -> Tensor:
        if shape != self._shape:  # type: ignore[attr-defined]
            raise RobevalError(f"lrc-data:dataset={self.dataset} has the covariance of images of shape "
                               f"{self._shape}, but the model's inputs are {shape}: "  # type: ignore[attr-defined]
                               "name the data set the model was trained on")
        return self._factor  # type: ignore[attr-defined]
