"""Gradient statistics and loss geometry of a classifier around its test inputs.

From "gradient norm without perturbations" (the thesis behind the ``gradient-norm`` and
``edge-alignment`` regularisers):

* Table 4.1: ``E||grad_x L||_1`` of the cross-entropy, overall and conditioned on a
  PGD-10 attack (eps 4/255 there) succeeding or failing on the point;
* Table A.1 (Srinivas et al., "Efficient training of low-curvature neural networks"):
  ``||grad_x L||_2``, the spectral norm of the input Hessian ``||grad_x^2 L||_2`` by power
  iteration on Hessian-vector products, and the normalised curvature
  ``C_L = ||grad_x^2 L||_2 / ||grad_x L||_2``;
* Eq. A.1 (Rocamora et al.): the local linearity error
  ``E_{alpha, eta1, eta2} |alpha L(x+eta1) + (1-alpha) L(x+eta2) - L(x + alpha eta1 + (1-alpha) eta2)|^2``
  with ``alpha ~ U(0, 1)`` and ``eta ~ U(-eps, eps)`` entrywise (eps 4/255);
* Table 5.1: the Pearson correlation, per image, between the log saliency map (per-pixel
  maximum over channels of ``|grad_x f(x)_y|``, Simonyan et al.) and the log oriented
  energy ``|g_u * x|^2 + |g_v * x|^2`` (summed over channels, clamped at 1e-3).

All statistics are per sample; the model is evaluated in eval mode, so the Hessian of the
summed loss is block diagonal and one batched Hessian-vector product gives every sample's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robeval.attacks.base import loss_gradient

__all__ = [
    "GeometryConfig", "geometry_samples", "geometry_summary", "hessian_spectral_norm", "hessian_vector_product",
    "local_linearity_error", "loss_gradient", "pearson_rows", "saliency_edge_correlation",
]

CURVATURE_EPS = 1e-12  # added to ||grad||_2 in the normalised curvature (Srinivas et al.)
EDGE_FLOOR = 1e-3  # oriented energy clamp of Table 5.1
SALIENCY_FLOOR = 1e-20  # keeps log(saliency) finite where a gradient entry is exactly zero


def hessian_spectral_norm(
    model: nn.Module, x: Tensor, y: Tensor, *, iters: int = 10, init: Tensor | None = None
) -> Tensor:
    """``||grad_x^2 CE(f(x_i), y_i)||_2`` per sample by ``iters`` steps of power iteration
    (largest |eigenvalue|: ``||H v||`` for the unit vector ``v`` it converges to). Starts
    from ``init`` (e.g. the gradient, as the thesis does to save iterations) or a seeded
    random direction."""
    if init is None:
        init = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype).to(x.device)
    v = _unit(init)
    norm = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    for _ in range(iters):
        hv = hessian_vector_product(model, x, y, v)
        norm = hv.flatten(1).norm(dim=1)
        v = _unit(hv)
    return norm.detach()


def hessian_vector_product(model: nn.Module, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """``grad_x^2 CE(f(x_i), y_i) v_i`` for every sample, by double backpropagation."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr, create_graph=True)
        (hv,) = torch.autograd.grad(grad, xr, grad_outputs=v.detach(), allow_unused=True)
    return torch.zeros_like(x) if hv is None else hv.detach()  # a model linear in x has no curvature


def local_linearity_error(
    loss: Callable[[Tensor], Tensor], x: Tensor, *, eps: float, samples: int, generator: torch.Generator
) -> Tensor:
    """Rocamora et al.'s local linearity error (thesis Eq. A.1) per sample, the mean over
    ``samples`` draws of ``alpha ~ U(0,1)``, ``eta1, eta2 ~ U(-eps, eps)``; ``loss`` maps a
    batch to per-sample losses. The points are not clipped to [0, 1] (the formula's)."""
    total = torch.zeros(len(x), dtype=torch.float64)
    for _ in range(samples):
        alpha = torch.rand(len(x), generator=generator, dtype=torch.float64)
        eta1 = (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1).to(x.device) * eps
        eta2 = (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1).to(x.device) * eps
        a = alpha.to(x.dtype).to(x.device).view(-1, *([1] * (x.dim() - 1)))
        with torch.no_grad():
            mixed = alpha * loss(x + eta1).double().cpu() + (1 - alpha) * loss(x + eta2).double().cpu()
            gap = mixed - loss(x + a * eta1 + (1 - a) * eta2).double().cpu()
        total += gap.pow(2)
    return total / samples


def saliency_edge_correlation(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float = 1.0) -> Tensor:
    """Per image, the Pearson correlation of ``log saliency`` with ``log edge(x)`` over
    pixels (thesis Table 5.1). Saliency: ``max_c |grad_x f(x)_y|`` (the class logit's
    gradient); edge: the oriented energy summed over channels, clamped at 1e-3."""
    from robeval.train.reg_gradient import oriented_energy

    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logit = model(xr).gather(1, y.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(logit, xr)
    saliency = grad.abs().amax(dim=1).flatten(1).double().clamp_min(SALIENCY_FLOOR).log()
    edge = oriented_energy(x.detach().double(), sigma).sum(dim=1).flatten(1).clamp_min(EDGE_FLOOR).log()
    return pearson_rows(saliency, edge.to(saliency.device))


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of two (N, P) tensors (NaN where a row is constant)."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denom > 0, (a * b).sum(dim=1) / denom.clamp_min(1e-300), torch.full_like(denom, math.nan))


def _unit(v: Tensor) -> Tensor:
    norms = v.flatten(1).norm(dim=1).clamp_min(1e-30)
    return v / norms.view(-1, *([1] * (v.dim() - 1)))


@dataclass(frozen=True)
class GeometryConfig:
    """Settings of :func:`geometry_samples` (thesis defaults: eps 4/255 for the linearity
    error and the PGD-10 conditioning; its curvature plots use 2 power iterations started
    from the gradient, Table A.1 more; 10 here)."""

    eps: float = 4 / 255
    power_iters: int = 10
    linearity_samples: int = 8
    edge_sigma: float = 1.0
    seed: int = 0


def geometry_samples(
    model: nn.Module, x: Tensor, y: Tensor, attack_fooled: Tensor, config: GeometryConfig
) -> pd.DataFrame:
    """One row per sample: loss, gradient L1/L2 norms, Hessian spectral norm, normalised
    curvature, local linearity error, saliency-edge correlation, and whether the attack
    (run by the caller) fooled it."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y, reduction="none")
    grad = loss_gradient(model, x, y)
    g1, g2 = grad.flatten(1).abs().sum(1), grad.flatten(1).norm(dim=1)
    hess = hessian_spectral_norm(model, x, y, iters=config.power_iters, init=grad)

    def per_sample_loss(z: Tensor) -> Tensor:
        return F.cross_entropy(model(z), y, reduction="none")

    lle = local_linearity_error(per_sample_loss, x, eps=config.eps, samples=config.linearity_samples,
                                generator=generator)
    corr = saliency_edge_correlation(model, x, y, sigma=config.edge_sigma)
    return pd.DataFrame({
        "loss": loss.double().cpu().numpy(), "grad_l1": g1.double().cpu().numpy(), "grad_l2": g2.double().cpu().numpy(),
        "hessian_norm": hess.double().cpu().numpy(),
        "curvature": (hess / (g2 + CURVATURE_EPS)).double().cpu().numpy(),
        "linearity_error": lle.numpy(), "saliency_edge_corr": corr.cpu().numpy(),
        "attack_fooled": attack_fooled.cpu().numpy().astype(bool),
    })


def geometry_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean and std of each statistic and of its log10 (the thesis reports both
    because the scale varies over orders of magnitude; 1e-17 added before the log), and
    ``E||grad||_1`` conditioned on the attack failing and succeeding (Table 4.1)."""
    rows = []
    for model, part in samples.groupby("model", sort=False):
        row: dict[str, object] = {"model": model, "n": len(part), "attack_success": float(part["attack_fooled"].mean())}
        for col in ("grad_l1", "grad_l2", "hessian_norm", "curvature", "linearity_error"):
            values = part[col].to_numpy(dtype=float)
            logs = np.log10(values + 1e-17)
            row |= {f"{col}_mean": values.mean(), f"{col}_std": values.std(),
                    f"log10_{col}_mean": logs.mean(), f"log10_{col}_std": logs.std()}
        fooled = part["attack_fooled"].to_numpy(dtype=bool)
        row["grad_l1_attack_failed"] = part["grad_l1"][~fooled].mean() if (~fooled).any() else math.nan
        row["grad_l1_attack_succeeded"] = part["grad_l1"][fooled].mean() if fooled.any() else math.nan
        corr = part["saliency_edge_corr"].to_numpy(dtype=float)
        row["saliency_edge_corr_mean"], row["saliency_edge_corr_std"] = np.nanmean(corr), np.nanstd(corr)
        rows.append(row)
    return pd.DataFrame(rows)
