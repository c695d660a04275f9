"""Small float64 models, batches and hand computations shared by the tests of the
input-gradient regularisers (gradient-norm, SGR, edge alignment)."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import nn


def _model(c: int = 1, side: int = 4, classes: int = 3, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, 2, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(2 * side * side, classes)).to(dtype)


def _batch(n: int = 5, c: int = 1, side: int = 4, classes: int = 3, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, side, side, generator=g, dtype=dtype), torch.randint(classes, (n,), generator=g)


def _per_sample_grads(model: nn.Module, x: torch.Tensor, scalar) -> torch.Tensor:
    """The hand computation: one autograd.grad per sample."""
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(scalar(model(xi), i), xi)
        rows.append(g[0])
    return torch.stack(rows)


def _ce_grads(model, x, labels):
    return _per_sample_grads(model, x, lambda out, i: F.cross_entropy(out, labels[i : i + 1]))


def _penalty(reg, model, x, y):
    return reg.penalty(model, x, y, model(x))


def _value(reg, model, x, y) -> float:
    return float(_penalty(reg, model, x, y).detach())


def _roundtrip(state: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as the resume file does."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
