"""``shapes``: procedurally drawn circles, stars, squares and triangles.

Like the four-shapes set of the smooth-kernels paper (section 4.1), each image shows one
black shape on a white background, here at a random position, size and rotation, drawn
with anti-aliasing by supersampling. Everything is generated from the spec's seed:
``shapes:size=28,channels=1,n_train=2000,n_test=400,seed=0`` (the defaults).
"""

from __future__ import annotations

import math

import numpy as np

from robeval.data.base import (
    EPS_MNIST,
    DatasetInfo,
    DataSource,
    datasets,
    int_in_range,
    take_params,
)
from robeval.errors import RobevalError
from robeval.params import ParamValue

CLASSES: tuple[str, ...] = ("circle", "star", "square", "triangle")
DEFAULTS: dict[str, int] = {"size": 28, "channels": 1, "n_train": 2000, "n_test": 400, "seed": 0}

#: vertex radii (relative to the circumradius) of each polygon, vertices evenly spaced in angle
_POLYGONS: dict[str, tuple[float, ...]] = {
    "star": (1.0, 0.45) * 5,
    "square": (1.0,) * 4,
    "triangle": (1.0,) * 3,
}
_CIRCLE_RADIUS = 0.85  # circle radius relative to the circumradius of the polygons
_RADIUS_RANGE = (0.36, 0.44)  # circumradius as a fraction of the image size
_BATCH_POINTS = 4_000_000  # supersampled points handled at once (memory bound)


def _supersampling(size: int) -> int:
    return 3 if size <= 64 else 2


def _inside(
    kind: str, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray, angle: np.ndarray
) -> np.ndarray:
    """Which points (rows: images) lie inside the shape centred at the origin."""
    dist = np.hypot(dx, dy)
    if kind == "circle":
        return dist < (_CIRCLE_RADIUS * radius)[:, None]
    radii = np.asarray(_POLYGONS[kind], dtype=np.float32)
    m = len(radii)
    step = 2 * math.pi / m
    phi = np.mod(np.arctan2(dy, dx) - angle[:, None], 2 * math.pi)
    sector = np.minimum((phi // step).astype(np.int64), m - 1)
    t = phi - sector * step
    ra, rb = radii[sector], radii[(sector + 1) % m]
    # distance from the centre to the edge between the two vertices along the ray at angle t
    edge = ra * rb * math.sin(step) / (ra * np.sin(t) + rb * np.sin(step - t))
    return dist < edge * radius[:, None]


def render(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 images (N, size, size) in [0, 1]: black shapes ``labels`` on white."""
    n = len(labels)
    k = _supersampling(size)
    margin = max(1.0, 0.05 * size)
    radius = np.minimum(rng.uniform(*_RADIUS_RANGE, n) * size, size / 2 - margin)
    lo, hi = radius + margin, size - radius - margin
    cx = lo + rng.random(n) * (hi - lo)
    cy = lo + rng.random(n) * (hi - lo)
    angle = rng.uniform(0.0, 2 * math.pi, n)
    # sample positions (pixel units) of the k x k subpixels of every pixel
    axis = ((np.arange(size * k) + 0.5) / k).astype(np.float32)
    gy, gx = np.meshgrid(axis, axis, indexing="ij")
    gx, gy = gx.ravel(), gy.ravel()
    out = np.empty((n, size, size), dtype=np.float32)
    per_batch = max(1, _BATCH_POINTS // gx.size)
    for cls_id, kind in enumerate(CLASSES):
        members = np.flatnonzero(labels == cls_id)
        for start in range(0, len(members), per_batch):
            idx = members[start : start + per_batch]
            dx = gx[None, :] - cx[idx, None].astype(np.float32)
            dy = gy[None, :] - cy[idx, None].astype(np.float32)
            inside = _inside(kind, dx, dy, radius[idx].astype(np.float32), angle[idx].astype(np.float32))
            cover = inside.reshape(len(idx), size, k, size, k).mean(axis=(2, 4), dtype=np.float32)
            out[idx] = 1.0 - cover
    return out


@datasets.register("shapes")
class Shapes(DataSource):
    """Seeded synthetic circle/star/square/triangle images, black on white."""

    summary = (
        "synthetic black circle/star/square/triangle on white; "
        "shapes:size=28,channels=1,n_train=2000,n_test=400,seed=0"
    )

    def __init__(self, params: dict[str, ParamValue], root: str | None = None) -> None:
        p = take_params("shapes", params, DEFAULTS)
        self.size = int_in_range("shapes", "size", p["size"], 8, 512)
        self.channels = p["channels"]
        if self.channels not in (1, 3):
            raise RobevalError(
                f"parameter channels={self.channels} of dataset 'shapes' must be 1 or 3; fix the spec"
            )
        self.n_train = int_in_range("shapes", "n_train", p["n_train"], 1, 1_000_000)
        self.n_test = int_in_range("shapes", "n_test", p["n_test"], 1, 1_000_000)
        self.seed = int_in_range("shapes", "seed", p["seed"], 0)
        changed = [f"{key}={p[key]}" for key in DEFAULTS if p[key] != DEFAULTS[key]]
        self._name = "shapes" + (":" + ",".join(changed) if changed else "")

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self._name,
            classes=CLASSES,
            input_shape=(self.channels, self.size, self.size),
            default_eps=EPS_MNIST,
            description=(
                f"synthetic black shapes on white, {self.size}x{self.size}, {self.channels} channel(s), "
                f"random position/size/rotation, balanced, {self.n_train} train / {self.n_test} test, "
                f"seed {self.seed}"
            ),
        )

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        n = self.n_train if split == "train" else self.n_test
        rng = np.random.default_rng([self.seed, 0 if split == "train" else 1])
        labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
        images = render(labels, self.size, rng)[:, None]
        if self.channels == 3:
            images = np.repeat(images, 3, axis=1)
        return images, labels
