"""Shared pieces of the attack contract.

An attack is a frozen dataclass (its configuration) that is called as
``attack(model, x, y, *, eps, generator=None) -> x_adv``: ``x`` holds images in [0, 1],
``y`` the labels, ``eps`` the budget in the attack's ``norm`` on that [0, 1] scale.
It must not mutate ``x``, change the model's train/eval mode, or accumulate parameter
gradients. It is *not* trusted to respect its budget: the runner checks every batch
(:mod:`robeval.eval.checks`) and alone decides success.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")


class Attack(Protocol):
    """What the runner needs from an attack configuration."""

    name: ClassVar[str]
    norm: str

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


def perturbation_norms(delta: Tensor, norm: str) -> Tensor:
    """Per-sample ``||delta||_p`` over all but the batch dimension (``linf`` or ``l2``)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    raise ValueError(f"unsupported norm {norm!r}")


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``delta`` onto the ``eps``-ball of ``norm`` (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = perturbation_norms(delta, norm).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def normalized_step(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit ``norm``: sign for L-inf, ``g/||g||_2`` for L2."""
    if norm == "linf":
        return grad.sign()
    norms = perturbation_norms(grad, norm).clamp_min(1e-12)
    return grad / norms.view(-1, *([1] * (grad.dim() - 1)))


def random_in_ball(
    like: Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> Tensor:
    """A random start inside the ``eps``-ball: uniform in the box for L-inf, uniform in
    the ball for L2 (Gaussian direction, radius ``eps * U^(1/d)``), as foolbox does.

    Drawn on the CPU from ``generator`` and moved to ``like.device``, so a seed gives the
    same start on every device.
    """
    shape = like.shape
    if norm == "linf":
        noise = torch.rand(shape, generator=generator, dtype=like.dtype) * 2 - 1
        return (noise * eps).to(like.device)
    dim = like[0].numel()
    direction = torch.randn(shape, generator=generator, dtype=like.dtype)
    direction = normalized_step(direction, "l2")
    radius = torch.rand(shape[0], generator=generator, dtype=like.dtype) ** (1.0 / dim)
    return (direction * (eps * radius).view(-1, *([1] * (len(shape) - 1)))).to(like.device)


def loss_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``d/dx sum_i CE(model(x_i), y_i)``; parameter gradients are neither computed nor stored."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad
