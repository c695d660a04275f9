"""Gradient statistics and loss geometry (`robeval gradients`): closed forms on affine
models and quadratic losses, finite differences, and by-hand recomputations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from robeval.analysis.geometry import (
    GeometryConfig,
    geometry_samples,
    geometry_summary,
    hessian_spectral_norm,
    hessian_vector_product,
    local_linearity_error,
    loss_gradient,
    saliency_edge_correlation,
)
from robeval.cli import app
from robeval.train.reg_gradient import oriented_energy


def _affine(d: int = 6, k: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double().eval()


def test_gradient_and_hessian_norm_match_the_affine_closed_form() -> None:
    """For f(x) = W x + b: grad = W^T (p - e_y), Hessian = W^T (diag p - p p^T) W."""
    model = _affine()
    W = model[1].weight.detach()
    x = torch.randn(5, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0])
    p = F.softmax(model(x), dim=1).detach()
    expected_grad = (p - F.one_hot(y, 4).double()) @ W
    assert torch.allclose(loss_gradient(model, x, y).flatten(1), expected_grad, atol=1e-12)
    norms = hessian_spectral_norm(model, x, y, iters=200)
    for i in range(5):
        H = W.T @ (torch.diag(p[i]) - torch.outer(p[i], p[i])) @ W
        assert norms[i].item() == pytest.approx(torch.linalg.eigvalsh(H).abs().max().item(), rel=1e-6)


def test_hessian_vector_product_equals_finite_differences_on_a_smooth_net() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    x = torch.rand(4, 1, 2, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    v = torch.randn_like(x)
    h = 1e-5
    fd = (loss_gradient(model, x + h * v, y) - loss_gradient(model, x - h * v, y)) / (2 * h)
    assert torch.allclose(hessian_vector_product(model, x, y, v), fd, atol=1e-7)


def test_local_linearity_error_closed_forms() -> None:
    """A linear loss has no linearity error; a quadratic one has the Jensen gap
    alpha (1 - alpha) ||eta1 - eta2||^2, whose squared mean is known in closed form."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 3, dtype=torch.float64)
    linear = local_linearity_error(lambda z: 2 * z.sum(1) + 1, x, eps=0.1, samples=5, generator=g)
    assert float(linear.abs().max()) < 1e-25
    d, eps = 3, 0.1
    zeros = torch.zeros(400, d, dtype=torch.float64)
    quad = local_linearity_error(lambda z: (z**2).sum(1), zeros, eps=eps, samples=50, generator=g)
    # E[a^2 (1-a)^2] = 1/30; with u = eta1 - eta2: E[u^4] = 16/15 eps^4, E[u^2] = 2/3 eps^2
    expected = (d * 16 / 15 + d * (d - 1) * 4 / 9) * eps**4 / 30
    assert float(quad.mean()) == pytest.approx(expected, rel=0.05)


def test_saliency_edge_correlation_by_hand(digits_model, digits_test) -> None:
    x, y = digits_test[0][:3], digits_test[1][:3]
    got = saliency_edge_correlation(digits_model, x, y, sigma=1.0)
    xr = x.clone().requires_grad_(True)
    logit = digits_model(xr)[torch.arange(3), y].sum()
    (grad,) = torch.autograd.grad(logit, xr)
    for i in range(3):
        sal = np.log(np.maximum(grad[i].abs().amax(0).numpy().astype(np.float64).ravel(), 1e-20))
        edge = np.log(np.maximum(oriented_energy(x[i:i + 1].double(), 1.0).sum(1).numpy().ravel(), 1e-3))
        assert got[i].item() == pytest.approx(np.corrcoef(sal, edge)[0, 1], abs=1e-6)


def test_summary_conditions_on_the_attack_as_recorded(digits_model, digits_test) -> None:
    x, y = digits_test[0][:40], digits_test[1][:40]
    fooled = torch.arange(40) % 3 == 0
    samples = geometry_samples(digits_model, x, y, fooled, GeometryConfig(power_iters=3, linearity_samples=2))
    samples.insert(0, "model", "m")
    row = geometry_summary(samples).iloc[0]
    g1 = samples["grad_l1"].to_numpy()
    assert row["grad_l1_attack_succeeded"] == pytest.approx(g1[fooled.numpy()].mean())
    assert row["grad_l1_attack_failed"] == pytest.approx(g1[~fooled.numpy()].mean())
    assert row["attack_success"] == pytest.approx(1 / 3 + 1 / 120, abs=0.01)
    assert np.allclose(samples["curvature"], samples["hessian_norm"] / (samples["grad_l2"] + 1e-12), rtol=1e-6)
    assert (samples[["grad_l1", "grad_l2", "hessian_norm", "linearity_error"]] >= 0).all().all()


def test_cli_compares_models_and_rejects_bad_input(digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "grad"
    result = CliRunner().invoke(app, ["gradients", str(digits_checkpoint), "--n", "24", "--eps", "0.1",
                                      "--attack", "fgsm", "--power-iters", "3", "--linearity-samples", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "gradients.csv")
    samples = pd.read_csv(out / "gradients_samples.csv")
    assert len(summary) == 1 and len(samples) == 24 and (out / "gradients.png").is_file()
    assert summary["grad_l1_mean"].item() == pytest.approx(samples["grad_l1"].mean())
    assert "E‖g‖₁ (attack succeeded)" in (out / "gradients.md").read_text()
    bad = CliRunner().invoke(app, ["gradients", str(digits_checkpoint), "--eps", "0.1,0.2", "--out", str(out)])
    assert bad.exit_code != 0 and "one finite budget" in bad.output and "Traceback" not in bad.output
