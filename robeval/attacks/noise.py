"""Random-noise attacks, worst of K draws: uniform (the RAND baseline), i.i.d. Gaussian, and
long-range-correlated Gaussian noise (LRC; Roth, Nowozin, Lucchi and Hofmann, "Adversarially
Robust Training through Structured Gradient Regularization", 2018, Sec. 4.3).

All three are budgeted, untargeted, gradient-free and *not nested* (``nested = False``):
noise of scale ``eps`` is not an answer at a larger ``eps``, so the runner attacks every
point at every eps.

Worst of K. Each point gets ``samples`` noise draws; the answer is the first draw (in draw
order) that the model misclassifies (prediction != ``y``), else the last draw. The draws
are made sample-major: draw ``k`` is one call of the sampler for the whole batch, made
before draw ``k + 1``, and every draw covers every point of the batch (also the points
already fooled), so draw ``k`` of point ``i`` depends on the seed, ``k`` and the batch
shape only. Hence the first ``K`` draws of a ``K' > K`` run are those of the ``K`` run: a
point fooled with ``K`` draws is fooled with ``K'`` by the very same image, and accuracy
never rises with ``samples``. The draws are evaluated in chunks (several draws at once,
only for the points not yet fooled), and the loop stops once every point is fooled.

Randomness comes from ``generator`` (the global CPU RNG when ``None``), is drawn and
transformed on the CPU and moved to the input's device, so a seed gives the same result on
every device. With a :class:`~robeval.attacks.rng.PointGenerator` draw ``k`` of point
``i`` is the ``k``-th draw of point ``i``'s own stream (drawn in blocks of up to 16,
:class:`~robeval.attacks.rng.PointDraws`), so it depends on the point and ``k`` only,
not on the batch it shares; draws are then made only for the points not yet fooled. ``x_adv = clip(x + noise, 0, 1)``; ``eps == 0`` returns ``x.clone()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robeval.attacks.lrc_sampling import (  # the sampler's public names, also importable from here
    circulant_embedding_error,
    covariance_factor,
    dense_covariance,
    dense_sample,
    estimate_covariance,
    lrc_color,
    lrc_sample,
    lrc_white_shape,
    sample_from_covariance,
)
from robeval.attacks.registry import attacks
from robeval.attacks.rng import PointDraws, PointGenerator

__all__ = [
    "LRC", "CovarianceNoise", "Gaussian", "Uniform", "circulant_embedding_error", "dense_covariance",
    "dense_sample", "estimate_covariance", "lrc_sample", "sample_from_covariance", "worst_of_k",
]

# Elements (draws x points x entries) held at once while evaluating the worst of K.
_ELEMENT_BUDGET = 1 << 24
_MAX_ROWS = 8192  # images per forward pass
# Per-point streams (a PointGenerator) draw up to this many noise images per point and call, at
# most this many entries per point at once: fixed by the image size alone, never by the batch.
_POINT_BLOCK = 16
_POINT_ELEMENTS = 1 << 16


def _predict(model: nn.Module, x: Tensor, rows: int) -> Tensor:
    return torch.cat([model(chunk).argmax(1) for chunk in x.split(rows)])


def worst_of_k(
    model: nn.Module, x: Tensor, y: Tensor, samples: int, draw: Callable[[], Tensor] | None = None, *,
    draws: Callable[[Tensor, int], Tensor] | None = None,
) -> Tensor:
    """Per point, the first of ``samples`` noisy images ``clip(x + noise, 0, 1)`` that the
    model misclassifies, else the last (see the module docstring). ``draw()`` returns one
    noise draw for the whole batch, on ``x``'s device; or ``draws(rows, count)`` the next
    ``count`` draws of the points ``rows`` only, ``(count, len(rows), ...)`` (per-point
    streams, :class:`~robeval.attacks.rng.PointDraws`)."""
    if (draw is None) == (draws is None):
        raise ValueError("give worst_of_k one of draw and draws")
    n = x.shape[0]
    out = x.clone()
    if n == 0:
        return out
    rows = max(1, min(_MAX_ROWS, _ELEMENT_BUDGET // max(1, x[0].numel())))
    per_chunk = max(1, rows // n)
    todo = torch.arange(n, device=x.device)
    done = 0
    with torch.no_grad():
        while done < samples and len(todo) > 0:
            b = min(samples - done, per_chunk)
            if draws is not None:
                noise = draws(todo, b)  # (b, len(todo), ...)
            else:
                noise = torch.stack([draw() for _ in range(b)])[:, todo]  # type: ignore[misc]  # in draw order
            cand = (x[todo].unsqueeze(0) + noise).clamp_(0.0, 1.0)
            pred = _predict(model, cand.flatten(0, 1), rows).view(b, len(todo))
            fooled = pred != y[todo].unsqueeze(0)
            hit = fooled.any(dim=0)
            first = fooled.to(torch.int8).argmax(dim=0)  # the first True along the draws
            idx = hit.nonzero().flatten()
            out[todo[idx]] = cand[first[idx], idx]
            done += b
            if done >= samples:
                miss = (~hit).nonzero().flatten()
                out[todo[miss]] = cand[-1, miss]
            todo = todo[~hit]
    return out


def _check_eps(eps: float) -> None:
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be finite and >= 0; got {eps}")


class _WorstOfK:
    """The shared call of the noise attacks: ``draw`` gives one noise tensor per point."""

    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = False
    gradient_free: ClassVar[bool] = True  # model queries only: runs on black-box models
    samples: int

    def white(
        self, count: int, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
    ) -> Tensor:
        """The random part of ``count`` draws for images of ``shape``, on the CPU."""
        raise NotImplementedError

    def color(self, z: Tensor, shape: tuple[int, ...], eps: float) -> Tensor:
        """The noise ``(count, *shape)`` of eps from the random part ``z`` of :meth:`white`."""
        raise NotImplementedError

    def draw(self, like: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        """One noise draw for every point of ``like``, on its device: one :meth:`white`
        call for the batch, or one per point for a
        :class:`~robeval.attacks.rng.PointGenerator`."""
        shape = tuple(like.shape[1:])
        if isinstance(generator, PointGenerator):
            z = self._point_draws(like, generator, block=1).take(range(len(like)), 1)[0]
        else:
            z = self.white(len(like), shape, generator, like.dtype)
        return self.color(z, shape, eps).to(like.device)

    def _point_draws(self, like: Tensor, generator: PointGenerator, block: int) -> PointDraws:
        shape, dtype = tuple(like.shape[1:]), like.dtype
        return PointDraws(generator, lambda count, g: self.white(count, shape, g, dtype), block)

    def _per_point(self, x0: Tensor, eps: float, generator: PointGenerator) -> Callable[[Tensor, int], Tensor]:
        """``draws(rows, count)`` for :func:`worst_of_k`: each point's random parts from its
        own stream, in blocks fixed by the image size alone, coloured together."""
        shape = tuple(x0.shape[1:])
        block = max(1, min(_POINT_BLOCK, _POINT_ELEMENTS // max(1, x0[0].numel())))
        per_point = self._point_draws(x0, generator, block)

        def draws(rows: Tensor, count: int) -> Tensor:
            z = per_point.take(rows.tolist(), count)  # (count, rows, ...)
            return self.color(z.flatten(0, 1), shape, eps).view(count, len(rows), *shape).to(x0.device)

        return draws

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        if target is not None:
            raise ValueError(f"{type(self).__name__} is untargeted; target must be None")
        _check_eps(eps)
        x0 = x.detach()
        if eps == 0:
            return x0.clone()
        if isinstance(generator, PointGenerator):
            return worst_of_k(model, x0, y, self.samples, draws=self._per_point(x0, eps, generator))
        return worst_of_k(model, x0, y, self.samples, lambda: self.draw(x0, eps, generator))

    def _check_samples(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1; got {self.samples}")


@attacks.register("uniform")
@dataclass(frozen=True, kw_only=True)
class Uniform(_WorstOfK):
    """Uniform noise ``U(-eps, eps)`` per entry, worst of ``samples`` draws: the RAND
    baseline of SGR (Table 1, "uniform random noise baseline", eps in units of 1/255 there;
    here on the [0, 1] scale). ``norm = "linf"``: ``x_adv`` stays in the L-inf eps-ball
    (and the box, after clipping).

    The paper gives no number of draws for RAND; ``samples=100`` matches the LRC
    worst-of-100 attack, so RAND and LRC compare at the same K. ``samples=1`` is a single
    draw (the plain random baseline)."""

    name: ClassVar[str] = "uniform"
    norm: ClassVar[str] = "linf"
    samples: int = 100

    def __post_init__(self) -> None:
        self._check_samples()

    def white(
        self, count: int, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
    ) -> Tensor:
        return torch.rand((count, *shape), generator=generator, dtype=dtype)

    def color(self, z: Tensor, shape: tuple[int, ...], eps: float) -> Tensor:
        return (z * 2 - 1) * eps


@attacks.register("gaussian")
@dataclass(frozen=True, kw_only=True)
class Gaussian(_WorstOfK):
    """I.i.d. Gaussian noise ``N(0, eps^2)`` per entry, worst of ``samples`` draws (the
    structure-free counterpart of LRC: LRC with ``zeta -> 0`` and no channel correlation).
    ``norm = "scale"``: eps is the noise's std, not a bound; only the box is enforced."""

    name: ClassVar[str] = "gaussian"
    norm: ClassVar[str] = "scale"
    samples: int = 100

    def __post_init__(self) -> None:
        self._check_samples()

    def white(
        self, count: int, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
    ) -> Tensor:
        return torch.randn((count, *shape), generator=generator, dtype=dtype)

    def color(self, z: Tensor, shape: tuple[int, ...], eps: float) -> Tensor:
        return z * eps


@attacks.register("lrc")
@dataclass(frozen=True, kw_only=True)
class LRC(_WorstOfK):
    """Long-range-correlated Gaussian noise, worst of ``samples`` draws (SGR, Sec. 4.3).

    ``noise = eps * xi``, ``xi ~ N(0, Sigma)`` with ``Sigma[(c,i,j), (c',i',j')] =
    exp(-r/zeta)`` for ``c == c'`` and ``0.5 exp(-r/zeta)`` otherwise, ``r =
    ||(i,j) - (i',j')||_2`` the exact pixel distance (the paper rounds distances only in
    the memory-efficient SGR *regulariser*, Sec. 3.3, not in the attack's covariance
    function; rounding would also spoil positive definiteness). Unit variance per entry,
    so eps is the per-entry std; ``norm = "scale"``. The paper: worst of 100, ``zeta`` in
    {1, 2, 4, 8, 16}, eps in [0.01, 0.7], mainly ``zeta = 8``; defaults ``zeta=8``,
    ``samples=100``.

    Sampling (:func:`lrc_sample`): Kronecker structure, exact dense spatial factor up to
    :data:`DENSE_MAX_PIXELS` pixels, circulant embedding (FFT) beyond, so no ``CHW x CHW``
    matrix is built for large images. For the data-set covariance variant of the paper
    use :meth:`from_data` (Python API only).
    """

    name: ClassVar[str] = "lrc"
    norm: ClassVar[str] = "scale"
    zeta: float = 8.0
    samples: int = 100

    def __post_init__(self) -> None:
        self._check_samples()
        if not (self.zeta > 0 and math.isfinite(self.zeta)):
            raise ValueError(f"zeta must be finite and > 0; got {self.zeta}")

    def white(
        self, count: int, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
    ) -> Tensor:
        return torch.randn((count, *lrc_white_shape(shape, self.zeta)), generator=generator, dtype=dtype)

    def color(self, z: Tensor, shape: tuple[int, ...], eps: float) -> Tensor:
        return lrc_color(z, shape, self.zeta) * eps

    @staticmethod
    def from_data(x: Tensor, *, samples: int = 100, normalize: bool = True) -> CovarianceNoise:
        """The LRC attack with the covariance estimated from images ``x`` (SGR, Sec. 4.3, last
        paragraph: "the covariance matrix computed from the CIFAR10 training set"); see
        :func:`estimate_covariance`. Dense: for images of up to a few thousand entries."""
        return CovarianceNoise.from_covariance(
            estimate_covariance(x, normalize), tuple(x.shape[1:]), samples=samples
        )


@dataclass(frozen=True, kw_only=True)
class CovarianceNoise(_WorstOfK):
    """Gaussian noise ``eps * N(0, cov)`` for a given dense covariance, worst of ``samples``.
    Not registered (it needs a matrix); build it with :meth:`from_covariance` or
    :meth:`LRC.from_data`."""

    name: ClassVar[str] = "lrc-data"
    norm: ClassVar[str] = "scale"
    samples: int = 100

    def __post_init__(self) -> None:
        self._check_samples()

    @classmethod
    def from_covariance(
        cls, cov: Tensor, shape: tuple[int, ...], *, samples: int = 100
    ) -> CovarianceNoise:
        dim = math.prod(shape)
        if cov.shape != (dim, dim):
            raise ValueError(f"covariance must be {dim} x {dim} for images of shape {shape}")
        attack = cls(samples=samples)
        object.__setattr__(attack, "_factor", covariance_factor(cov))
        object.__setattr__(attack, "_shape", tuple(shape))
        return attack

    def white(
        self, count: int, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
    ) -> Tensor:
        return torch.randn((count, self._checked_factor(shape).shape[1]), generator=generator, dtype=dtype)

    def color(self, z: Tensor, shape: tuple[int, ...], eps: float) -> Tensor:
        return ((z @ self._checked_factor(shape).T.to(z.dtype)) * eps).view(len(z), *shape)

    def _checked_factor(self, shape: tuple[int, ...]) -> Tensor:
        factor = getattr(self, "_factor", None)
        if factor is None:
            raise ValueError("CovarianceNoise needs a covariance; use CovarianceNoise.from_covariance")
        if shape != self._shape:  # type: ignore[attr-defined]
            raise ValueError(f"images of shape {shape}, covariance for {self._shape}")  # type: ignore[attr-defined]
        return factor
