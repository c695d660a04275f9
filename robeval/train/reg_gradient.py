"""Input-gradient regularisers of "Gradient Norm Regularization without Perturbations"
(the thesis in ``papers/gradient-norm-without-perturbations.txt``): ``gradient-norm``
(GradNorm, Eq. 4.1) and ``edge-alignment`` (Eqs. 5.1-5.2), plus the double-backprop
helpers they share with SGR (:mod:`robeval.train.reg_sgr`).

Conventions (all input-gradient regularisers):

* The training loop passes ``x`` in [0, 1] (robeval's ``Normalize`` wrapper sits *inside*
  the model) and ``logits = model(x)``; ``x`` is not a leaf that requires grad, so the
  passed logits cannot be differentiated w.r.t. the input. The penalty therefore runs one
  more forward pass on ``x.detach().requires_grad_(True)`` and takes the input gradient
  with ``create_graph=True`` (double backprop, Drucker and Le Cun 1992: the thesis' [49]),
  so the penalty's own gradient reaches the parameters. Cost: one forward and two
  backward passes on top of the plain step.
* That extra forward runs in the caller's (train) mode, so the gradient is that of the
  function being trained, but BatchNorm's running statistics are restored afterwards:
  the same batch must not count twice (:func:`batchnorm_stats_kept`).
* Per-sample gradients are taken as the gradient of the *summed* per-sample loss. Without
  BatchNorm in train mode the samples are independent and row ``i`` is exactly
  ``grad_{x_i} loss_i``; with train-mode BatchNorm it also carries the batch-statistics
  coupling (as in every double-backprop implementation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from robeval.train.regularisers import regularisers


@contextmanager
def batchnorm_stats_kept(model: nn.Module) -> Iterator[None]:
    """Let a train-mode forward pass inside the block update *copies* of every BatchNorm's
    running mean, variance and batch counter, and put the originals back on exit, so an
    extra forward pass of a batch leaves them as they were. (Copying the old values back
    in place instead would bump their version counters and break the backward pass.)"""
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [(m, {n: getattr(m, n) for n in names if getattr(m, n, None) is not None})
             for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for module, buffers in saved:
        for name, value in buffers.items():
            setattr(module, name, value.clone())
    try:
        yield
    finally:
        for module, buffers in saved:
            for name, value in buffers.items():
                setattr(module, name, value)


def input_gradient(
    model: nn.Module, x: Tensor, scalar: Callable[[Tensor], Tensor], *, create_graph: bool = True
) -> tuple[Tensor, Tensor]:
    """``(grad_x scalar(model(x)), model(x))`` on a fresh leaf copy of ``x``; with
    ``create_graph`` the gradient is itself differentiable w.r.t. the parameters.
    BatchNorm running statistics are left unchanged."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():  # also under no_grad (e.g. a penalty measured in evaluation)
        with batchnorm_stats_kept(model):
            logits = model(leaf)
        (grad,) = torch.autograd.grad(scalar(logits), leaf, create_graph=create_graph)
    return grad, logits


def ce_input_gradient(model: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool = True) -> Tensor:
    """Per-sample ``grad_{x_i} CE(f(x_i), y_i)`` (shape of ``x``): the gradient of the summed
    cross-entropy, so each row is its own sample's gradient (see the module docstring)."""
    grad, _ = input_gradient(model, x, lambda out: F.cross_entropy(out, y, reduction="sum"), create_graph=create_graph)
    return grad


class _Stepped:
    """Optimiser-step counter kept in ``_state`` and saved with the resume file."""

    _state: dict

    def state_dict(self) -> dict:
        return {"steps": int(self._state.get("steps", 0))}

    def load_state_dict(self, state: dict) -> None:
        self._state["steps"] = int(state.get("steps", 0))

    def after_step(self, model: nn.Module, lr: float) -> None:
        self._state["steps"] = self._state.get("steps", 0) + 1


@regularisers.register("gradient-norm")
@dataclass(frozen=True, kw_only=True)
class GradientNorm(_Stepped):
    """GradNorm: penalise the L1 norm of the loss input-gradient on clean inputs (thesis
    Eq. 4.1, double backprop).

    ``penalty = lam * w(s) * (eps / sigma) * mean_i ||grad_{x_i} CE(f(x_i), y_i)||``

    * ``norm``: ``l1`` (default, Eq. 4.1) or ``l2`` (Euclidean norm, not squared).
    * ``eps = 4/255`` (Eq. 4.1: "eps = 4 is the adversarial strength", in units of 1/255;
      the AutoAttack L-inf radius of the evaluation).
    * ``sigma`` converts a pixel-scale ``eps`` to the scale of the input the gradient is
      taken w.r.t. The thesis differentiates w.r.t. the *normalised* input, hence its
      ``sigma = 0.225`` (ImageNet std). Robeval differentiates w.r.t. the [0, 1] input
      (normalisation is inside the model), where ``grad_pixel = grad_normalised / std``,
      so ``eps * ||grad_pixel||_1`` is the same quantity exactly (per channel, even) and
      the default is ``sigma = 1``. Give ``sigma=0.225`` only for a model that itself takes
      normalised inputs.
    * ``lam`` (also ``lambda``) is ``lambda_GN / lambda_CE`` because the loop's objective
      has weight 1: the ResNet recipe (App. B.2.1, 0.5 / 0.5) gives the default ``1.0``;
      the Swin recipe (App. B.3.2, 0.8 / 1.2) gives ``1.5`` (with Adam, the overall
      factor ``lambda_CE`` only rescales the step).
    * ``warmup_steps``: "gradnorm_weight is warmed up linearly over 5 epochs" (App. B.2.1,
      B.3.2). ``penalty()`` does not know the epoch, so the weight is
      ``w(s) = min(1, (s + 1) / warmup_steps)`` with ``s`` the optimiser steps taken so far
      (counted in ``after_step`` and saved with the resume state); ``warmup_steps = 5 x
      steps per epoch`` reproduces the paper. Default 0: no warm-up.

    The labels are the training labels ``y`` (Eq. 4.1). The thesis (Sec. 4.3) stresses that
    this works with smooth activations (GELU/SiLU) and Adam; ReLU nets barely improve.
    """

    name: ClassVar[str] = "gradient-norm"
    aliases: ClassVar[dict[str, str]] = {"lambda": "lam", "lambda_": "lam"}
    lam: float = 1.0
    eps: float = 4 / 255
    sigma: float = 1.0
    norm: Literal["l1", "l2"] = "l1"
    warmup_steps: int = 0
    _state: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.norm not in ("l1", "l2"):
            raise ValueError("norm must be l1 or l2")
        if self.eps < 0 or self.sigma <= 0:
            raise ValueError("need eps >= 0 and sigma > 0")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")

    def warmup(self) -> float:
        """The warm-up factor ``w(s)`` of the next penalty."""
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (self._state.get("steps", 0) + 1) / self.warmup_steps)

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        grad = ce_input_gradient(model, x, y).flatten(1)
        if self.norm == "l1":
            norms = grad.abs().sum(1)
        else:
            norms = grad.pow(2).sum(1).clamp_min(1e-30).sqrt()
        return self.lam * self.warmup() * (self.eps / self.sigma) * norms.mean()


def gaussian_derivative_filters(sigma: float, radius: int | None = None) -> tuple[Tensor, Tensor]:
    """``(g_u, g_v)``: derivatives of a 2-D Gaussian of std ``sigma`` along u (horizontal,
    the width axis) and v (vertical), sampled on a ``(2r+1) x (2r+1)`` grid, ``r =
    ceil(3 sigma)`` by default. ``g_u(v, u) = -u / sigma^2 G(v, u)`` with ``G`` normalised
    to sum 1; each filter sums to zero and is antisymmetric along its axis. Float64."""
    r = math.ceil(3 * sigma) if radius is None else radius
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    vv, uu = torch.meshgrid(t, t, indexing="ij")
    g = torch.exp(-(uu**2 + vv**2) / (2 * sigma**2))
    g = g / g.sum()
    return -uu / sigma**2 * g, -vv / sigma**2 * g


def oriented_energy(x: Tensor, sigma: float) -> Tensor:
    """``|g_u * x|^2 + |g_v * x|^2`` per channel (shape of ``x``), the thesis' ``edge(x)``
    (Fig. 5.1, Eq. 5.1). Replicate padding, so image borders are no edges."""
    g_u, g_v = gaussian_derivative_filters(sigma)
    channels, r = x.shape[1], g_u.shape[-1] // 2
    weight = torch.stack([g_u, g_v]).unsqueeze(1).repeat(channels, 1, 1, 1).to(x)
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    out = F.conv2d(padded, weight, groups=channels)  # (N, 2C, H, W): u, v per channel
    return out.pow(2).unflatten(1, (channels, 2)).sum(2)


@regularisers.register("edge-alignment")
@dataclass(frozen=True, kw_only=True)
class EdgeAlignment:
    """Align the class input-gradient with the image edges (thesis Sec. 4.4, Eqs. 5.1-5.2).

    ``penalty = lam * mean_i [1 - cos(grad_x f(x_i)_{t_i}, |g_u * x_i|^2 + |g_v * x_i|^2)]``,
    ``t_i ~ softmax(f(x_i) / T)``, ``T = 0.5`` (Eq. 5.2).

    * ``f(x)_t`` is the *logit* of class ``t`` (Sec. 4.4: "the gradient of target-class
      logit w.r.t. input"), ``t`` sampled from the tempered softmax of the passed (clean,
      train-mode) logits with the regulariser's own seeded generator (``seed``; its state
      travels with the resume file). Sampling "marginally but measurably improved
      results" over the true class (Sec. 4.4).
    * Channels: the thesis does not say how colour channels combine; here the edge map is
      computed per channel (``g_u``, ``g_v`` applied depthwise) and the cosine is over the
      whole flattened ``C x H x W`` gradient and edge map, the literal reading of Eq. 5.1.
      The gradient is signed, as in Eq. 5.1 (``abs_grad=True`` aligns ``|grad|`` instead,
      like the saliency maps of Table 5.1). The edge map is computed on the [0, 1] input
      (the thesis' on the normalised one: only per-channel weights differ).
    * ``sigma``: the thesis only says "Gaussian horizontal and vertical derivative filters"
      (and "Sobel filters", Sec. 4.4), no width; the default ``sigma = 1`` pixel (7x7
      filters) is the smallest Gaussian that a Sobel filter approximates.
    * ``lam`` (also ``lambda``): no value is given (Sec. 4.4 trains it for 128 epochs);
      default 1.
    The penalty constrains only the gradient's direction, not its norm (Sec. 4.4).
    """

    name: ClassVar[str] = "edge-alignment"
    aliases: ClassVar[dict[str, str]] = {"lambda": "lam", "lambda_": "lam"}
    lam: float = 1.0
    sigma: float = 1.0
    temperature: float = 0.5
    abs_grad: bool = False
    seed: int = 0
    _state: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.temperature <= 0:
            raise ValueError("sigma and temperature must be > 0")

    def _generator(self) -> torch.Generator:
        if "generator" not in self._state:
            self._state["generator"] = torch.Generator().manual_seed(self.seed)
        return self._state["generator"]

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self._generator().get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "generator" in state:
            self._generator().set_state(state["generator"])

    def sample_classes(self, logits: Tensor) -> Tensor:
        """``t_i ~ softmax(logits_i / temperature)`` (Eq. 5.2), drawn on the CPU generator."""
        probs = torch.softmax(logits.detach().double().cpu() / self.temperature, dim=1)
        return torch.multinomial(probs, 1, generator=self._generator()).squeeze(1).to(logits.device)

    def cosine_loss(self, model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        """``mean_i [1 - cos(grad_x f(x_i)_{t_i}, edge(x_i))]`` for given classes ``t``."""
        grad, _ = input_gradient(model, x, lambda out: out.gather(1, t[:, None]).sum())
        if self.abs_grad:
            grad = grad.abs()
        edges = oriented_energy(x.detach(), self.sigma)
        return (1 - F.cosine_similarity(grad.flatten(1), edges.flatten(1), dim=1, eps=1e-12)).mean()

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        return self.lam * self.cosine_loss(model, x, self.sample_classes(logits))

    def after_step(self, model: nn.Module, lr: float) -> None:
        return None
