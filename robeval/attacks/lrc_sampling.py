"""Sampling long-range-correlated (LRC) Gaussian noise (Roth, Nowozin, Lucchi and Hofmann,
"Adversarially Robust Training through Structured Gradient Regularization", 2018, Sec. 4.3).

The covariance between entries (c, i, j) and (c', i', j') is ``exp(-r/zeta)`` within a
channel and ``0.5 exp(-r/zeta)`` across channels, ``r`` the Euclidean pixel distance (not
rounded). It is the Kronecker product of a channel matrix (1 on the diagonal, 0.5 off)
and a stationary spatial kernel. Each channel gets an independent spatial field, mixed
across channels by the channel matrix's Cholesky factor. Small grids use the exact dense
factor; larger ones circulant embedding (FFT on a torus that grows until its eigenvalues
are non-negative), so no dense (HWC x HWC) matrix is ever built. The dense builders are
kept as the reference the tests compare against.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

# Spatial grids with at most this many pixels are sampled through the exact dense
# Cholesky factor; larger ones through circulant embedding (FFT).
DENSE_MAX_PIXELS = 4096
# Circulant embedding: the torus side starts at twice the image side and doubles while
# negative eigenvalues remain, up to this many torus entries; the rest are clamped to 0.
_MAX_TORUS = 1 << 22
_NEG_TOL = 1e-10  # eigenvalues above -_NEG_TOL * max count as non-negative


def channel_covariance(channels: int) -> Tensor:
    """The LRC channel covariance: 1 on the diagonal, 0.5 off it (float64, ``C x C``)."""
    return 0.5 * torch.ones(channels, channels, dtype=torch.float64) + 0.5 * torch.eye(
        channels, dtype=torch.float64
    )


def spatial_covariance(height: int, width: int, zeta: float) -> Tensor:
    """``exp(-r / zeta)`` between the pixels of an ``H x W`` grid (row-major), ``r`` the exact
    Euclidean pixel distance (float64, ``HW x HW``)."""
    ii, jj = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    pos = torch.stack([ii.flatten(), jj.flatten()], dim=1)
    return torch.exp(-torch.cdist(pos, pos) / zeta)


def dense_covariance(shape: tuple[int, ...], zeta: float) -> Tensor:
    """The exact LRC covariance of an image of ``shape`` ``(C, H, W)`` (or ``(H, W)``), in the
    order of ``x.flatten()``: ``exp(-r/zeta)`` within a channel, ``0.5 exp(-r/zeta)``
    across channels (``kron(channel_covariance, spatial_covariance)``). For tests and small
    images only: it has ``(CHW)^2`` entries."""
    channels, height, width = _chw(shape)
    return torch.kron(channel_covariance(channels), spatial_covariance(height, width, zeta))


def covariance_factor(cov: Tensor) -> Tensor:
    """``L`` with ``L L^T = cov`` for a symmetric positive semi-definite ``cov`` (float64):
    ``V sqrt(max(w, 0))`` from ``eigh``, which also handles singular data covariances."""
    w, v = torch.linalg.eigh(cov.double())
    return v * w.clamp_min(0).sqrt()


def sample_from_covariance(
    cov: Tensor, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``n`` draws from ``N(0, cov)`` (shape ``(n, D)``), the dense reference sampler."""
    factor = covariance_factor(cov).to(dtype)
    z = torch.randn((n, factor.shape[1]), generator=generator, dtype=dtype)
    return z @ factor.T


def dense_sample(
    shape: tuple[int, ...], zeta: float, n: int, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``n`` LRC draws of ``shape`` from the full dense covariance (reference, small images)."""
    return sample_from_covariance(dense_covariance(shape, zeta), n, generator, dtype).view(n, *shape)


def estimate_covariance(x: Tensor, normalize: bool = True) -> Tensor:
    """The (centred) covariance of the images ``x`` (``(N, ...)``), ``D x D`` float64, ``D`` the
    entries per image; with ``normalize`` rescaled so its mean diagonal entry is 1, like the
    LRC covariance function, so that ``eps`` keeps meaning the per-entry noise std (SGR,
    Sec. 3.3, also standardises its covariance)."""
    flat = x.detach().flatten(1).double().cpu()
    if flat.shape[0] < 2:
        raise ValueError("need at least two images to estimate a covariance")
    flat = flat - flat.mean(dim=0)
    cov = flat.T @ flat / (flat.shape[0] - 1)
    if normalize:
        scale = float(cov.diagonal().mean())
        if scale <= 0:
            raise ValueError("the images do not vary; their covariance is zero")
        cov = cov / scale
    return cov


def _torus_kernel(m: int, n: int, zeta: float) -> Tensor:
    i = torch.arange(m, dtype=torch.float64)
    j = torch.arange(n, dtype=torch.float64)
    di, dj = torch.minimum(i, m - i), torch.minimum(j, n - j)
    return torch.exp(-torch.sqrt(di[:, None] ** 2 + dj[None, :] ** 2) / zeta)


@lru_cache(maxsize=32)
def circulant_embedding(height: int, width: int, zeta: float) -> tuple[Tensor, Tensor]:
    """Eigenvalues of the stationary kernel ``exp(-r/zeta)`` embedded in a torus ``M x N``.

    The torus starts at ``2H x 2W`` (distances wrap around, so every displacement inside the
    image is represented exactly) and doubles while eigenvalues below ``-1e-10 * max``
    remain (the exponential kernel needs a torus side of about ``16 zeta``), up to
    ``2^22`` entries. Remaining negative eigenvalues are clamped to 0, which makes the
    realised covariance ``ifft2(max(lambda, 0))`` differ from the target; see
    :func:`circulant_embedding_error`. Returns ``(lambda, clamped lambda)``, float64.
    """
    m, n = 2 * height, 2 * width
    while True:
        lam = torch.fft.fft2(_torus_kernel(m, n, zeta)).real
        if float(lam.min()) >= -_NEG_TOL * float(lam.max()) or 4 * m * n > _MAX_TORUS:
            return lam, lam.clamp_min(0)
        m, n = 2 * m, 2 * n


def circulant_embedding_error(height: int, width: int, zeta: float) -> float:
    """Max abs difference between the covariance the FFT sampler realises and
    ``exp(-r/zeta)``, over all displacements inside an ``H x W`` image (0 up to rounding
    when no eigenvalue had to be clamped)."""
    lam, clamped = circulant_embedding(height, width, zeta)
    m, n = lam.shape
    err = torch.fft.ifft2(clamped).real - _torus_kernel(m, n, zeta)
    rows = torch.cat([torch.arange(height), torch.arange(m - height + 1, m)])
    cols = torch.cat([torch.arange(width), torch.arange(n - width + 1, n)])
    return float(err[rows][:, cols].abs().max())


def fft_spatial_sample(
    n: int, height: int, width: int, zeta: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``n`` draws ``(n, H, W)`` of the stationary field with covariance ``exp(-r/zeta)`` by
    circulant embedding, with memory ``O(n M N)`` (no dense matrix).

    Real white noise ``z`` on the ``M x N`` torus, ``Y = fft2(sqrt(lambda / MN) z)``; then
    ``Re Y - Im Y`` (the Hartley transform of the scaled noise) has exactly the circulant
    covariance, and its ``H x W`` corner the target one (up to the clamping of
    :func:`circulant_embedding`)."""
    m, k = circulant_embedding(height, width, zeta)[1].shape
    return _fft_fields(torch.randn((n, m, k), generator=generator, dtype=dtype), height, width, zeta)


def _fft_fields(z: Tensor, height: int, width: int, zeta: float) -> Tensor:
    """The fields of white noise ``z`` (``(n, M, N)`` on the torus) by circulant embedding."""
    _, clamped = circulant_embedding(height, width, zeta)
    m, k = clamped.shape
    scale = (clamped / (m * k)).sqrt().to(z.dtype)
    y = torch.fft.fft2(z * scale)
    return (y.real - y.imag)[:, :height, :width].contiguous()


@lru_cache(maxsize=32)
def _dense_spatial_factor(height: int, width: int, zeta: float) -> Tensor:
    return covariance_factor(spatial_covariance(height, width, zeta))


def lrc_sample(
    shape: tuple[int, ...], n: int, zeta: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32, method: str = "auto",
) -> Tensor:
    """``n`` LRC draws of ``shape`` (``(C, H, W)`` or ``(H, W)``), unit variance per entry.

    The covariance is a Kronecker product, channel covariance (1 on, 0.5 off the diagonal)
    times the spatial ``exp(-r/zeta)``: each channel gets an independent spatial field, and
    the channel vectors are then mixed by the Cholesky factor of the channel covariance.
    The spatial field comes from the exact dense factor (``method="dense"``) or from
    circulant embedding (``"fft"``); ``"auto"`` takes dense up to
    :data:`DENSE_MAX_PIXELS` pixels, FFT beyond. Drawn on the CPU: the white noise of
    :func:`lrc_white_shape`, coloured by :func:`lrc_color`.
    """
    white = lrc_white_shape(shape, zeta, method)
    return lrc_color(torch.randn((n, *white), generator=generator, dtype=dtype), shape, zeta, method)


def lrc_white_shape(shape: tuple[int, ...], zeta: float, method: str = "auto") -> tuple[int, ...]:
    """The shape of the white noise one LRC draw of ``shape`` is made from: ``(C, H*W)``
    (dense factor) or ``(C, M, N)`` (the circulant embedding's torus)."""
    channels, height, width = _chw(shape)
    method = _method(height, width, method)
    if method == "dense":
        return (channels, height * width)
    m, k = circulant_embedding(height, width, zeta)[1].shape
    return (channels, int(m), int(k))


def lrc_color(z: Tensor, shape: tuple[int, ...], zeta: float, method: str = "auto") -> Tensor:
    """LRC draws of ``shape`` from white noise ``z`` (``(n, *lrc_white_shape(...))``)."""
    channels, height, width = _chw(shape)
    n = z.shape[0]
    if _method(height, width, method) == "dense":
        factor = _dense_spatial_factor(height, width, zeta).to(z.dtype)
        fields = (z.reshape(n * channels, height * width) @ factor.T).view(n, channels, height, width)
    else:
        fields = _fft_fields(z.reshape(n * channels, *z.shape[2:]), height, width, zeta)
        fields = fields.view(n, channels, height, width)
    if channels > 1:
        mix = torch.linalg.cholesky(channel_covariance(channels)).to(z.dtype)
        fields = torch.einsum("cd,ndhw->nchw", mix, fields)
    return fields.reshape(n, *shape)


def _method(height: int, width: int, method: str) -> str:
    if method == "auto":
        return "dense" if height * width <= DENSE_MAX_PIXELS else "fft"
    if method not in ("dense", "fft"):
        raise ValueError(f"method must be 'auto', 'dense' or 'fft'; got {method!r}")
    return method


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    raise ValueError(f"LRC noise needs images of shape (C, H, W) or (H, W); got {tuple(shape)}")
