"""SGR's memory-efficient covariance *function* (Roth et al., Sec. 3.3, Eq. 16).

For images, the covariance of the perturbations is estimated as a function of the pixel
displacement rounded to the nearest integer, ``Cov_ij ~ CovFun(round(||i - j||_2))``,
separately for pairs within one colour channel (intra) and across channels (inter) as in
the paper's Fig. 2. The function is an array of ``max_distance + 1`` numbers per kind,
estimated from a batch through FFT autocorrelations (every displacement at once), and
the quadratic form ``g^T Sigma g`` is a convolution with the kernel it defines, done
exactly by FFT on a ``2H x 2W`` torus. Memory ``O(C H W)`` instead of ``O((C H W)^2)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _displacements(h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For the ``2H x 2W`` torus of linear correlations: the signed displacement grid's
    rounded Euclidean length (``(2H, 2W)``, long) and the number of pixel pairs at each
    displacement in an ``H x W`` image (0 for the unused wrap-around row/column)."""
    di = torch.arange(2 * h, device=device)
    dj = torch.arange(2 * w, device=device)
    di = torch.where(di < h, di, di - 2 * h)  # 0..H-1, then -H..-1 (index H is -H: no pairs)
    dj = torch.where(dj < w, dj, dj - 2 * w)
    dist = torch.sqrt(di[:, None].double() ** 2 + dj[None, :].double() ** 2)
    pairs = (h - di.abs()).clamp_min(0)[:, None] * (w - dj.abs()).clamp_min(0)[None, :]
    return torch.round(dist).long(), pairs.double()


def max_distance(h: int, w: int) -> int:
    """The largest rounded displacement inside an ``H x W`` image."""
    return round(math.hypot(h - 1, w - 1))


def estimate_covfun(xi: Tensor) -> Tensor:
    """``(2, max_distance + 1)``: row 0 the intra-channel, row 1 the inter-channel mean of
    ``xi_p xi_q`` over the pixel pairs ``(p, q)`` whose rounded distance is ``d`` and over
    the batch (raw second moments, as Eq. 15). Inter is 0 for one channel."""
    m, c, h, w = xi.shape
    x = xi.double()
    spec = torch.fft.rfft2(x, s=(2 * h, 2 * w))  # (m, C, 2H, W+1)
    total = spec.sum(1)
    own = torch.fft.irfft2((spec.conj() * spec).sum(1), s=(2 * h, 2 * w)).sum(0)  # sum_c A_cc
    cross = torch.fft.irfft2(total.conj() * total, s=(2 * h, 2 * w)).sum(0) - own  # sum_{c != c'} A_cc'
    rounded, pairs = _displacements(h, w, x.device)
    size = max_distance(h, w) + 1
    keep = (pairs > 0) & (rounded < size)
    index = rounded[keep]
    counts = torch.zeros(size, dtype=torch.float64, device=x.device).index_add_(0, index, pairs[keep])
    intra = torch.zeros(size, dtype=torch.float64, device=x.device).index_add_(0, index, own[keep])
    inter = torch.zeros(size, dtype=torch.float64, device=x.device).index_add_(0, index, cross[keep])
    counts = counts.clamp_min(1.0)
    cross_pairs = counts * max(c * (c - 1), 1)
    return torch.stack([intra / (counts * c * m), inter / (cross_pairs * m) if c > 1 else inter * 0])


def covfun_matvec(g: Tensor, covfun: Tensor) -> Tensor:
    """``Sigma g`` for each ``g`` of ``(N, C, H, W)`` with ``Sigma_pq = covfun[kind,
    round(||p - q||)]`` (kind 0 within a channel, 1 across): ``(K_intra - K_inter) * g_c +
    K_inter * sum_c' g_c'``, linear convolutions done by FFT. Differentiable in ``g``."""
    _, _, h, w = g.shape
    rounded, pairs = _displacements(h, w, g.device)
    valid = pairs > 0
    f = covfun.to(g.device, torch.float64)
    index = rounded.clamp(max=f.shape[1] - 1)
    k_intra = torch.where(valid, f[0][index], torch.zeros_like(pairs)).to(g.dtype)
    k_inter = torch.where(valid, f[1][index], torch.zeros_like(pairs)).to(g.dtype)

    def conv(kernel: Tensor, signal: Tensor) -> Tensor:
        out = torch.fft.irfft2(torch.fft.rfft2(signal, s=(2 * h, 2 * w)) * torch.fft.rfft2(kernel), s=(2 * h, 2 * w))
        return out[..., :h, :w]

    return conv(k_intra - k_inter, g) + conv(k_inter, g.sum(1, keepdim=True))


def dense_covfun_matrix(shape: tuple[int, int, int], covfun: Tensor) -> Tensor:
    """The ``D x D`` matrix the function stands for (for tests and small images)."""
    c, h, w = shape
    ch, row, col = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    ch, row, col = ch.flatten(), row.flatten(), col.flatten()
    dist = torch.sqrt((row[:, None] - row[None, :]).double() ** 2 + (col[:, None] - col[None, :]).double() ** 2)
    kind = (ch[:, None] != ch[None, :]).long()
    return covfun.double()[kind, torch.round(dist).long()]
