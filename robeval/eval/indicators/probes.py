"""Model-level probes on a small sample of clean-correct points: does the input gradient
exist and carry information, are the predictions deterministic and smooth at a scale
far below eps, and are the outputs probabilities rather than logits. Each probe costs a
few forward/backward passes on the sample."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robeval.attacks.losses import objective

NOISE = 1e-3  # L-inf size of the stability probe's noise, below 1/255
NOISE_DRAWS = 4
LOGIT_RTOL = 1e-3  # two forwards of one input may differ by this much (relative) before it counts
PROBABILITY_SHARE = 0.99  # outputs count as probabilities when more than this share of rows are


def point_loss(logits: Tensor, y: Tensor, loss: str = "ce") -> Tensor:
    """Per-point loss an untargeted attack ascends (:mod:`robeval.attacks.losses`): the
    cross-entropy, the Carlini-Wagner margin or Croce & Hein's DLR."""
    return objective(loss)(logits, y, None)


@dataclass
class GradientProbe:
    """Per sample point: whether its input gradient is missing (graph cut), non-finite or
    exactly zero, and the modules where the gradient stops (innermost first)."""

    missing: Tensor
    nonfinite: Tensor
    zero: Tensor
    grad: Tensor | None
    blocking: list[str] = field(default_factory=list)

    @property
    def unusable(self) -> Tensor:
        return self.missing | self.nonfinite | self.zero


def gradient_probe(model: nn.Module, x: Tensor, y: Tensor, loss: str = "ce") -> GradientProbe:
    """Input gradients of the per-point ``loss`` on ``x``, and where they stop.

    Every submodule's input and output are recorded by forward hooks; a module *blocks*
    when the gradient reaches its output but not its input (its output does not require
    grad although its input does, or the input gradient is exactly zero for points whose
    output gradient is not). The innermost blocking modules are the ones BPDA should wrap.
    """
    records: list[tuple[str, Tensor, Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: object) -> None:
            inp = next((a for a in args if isinstance(a, Tensor)), None)
            if inp is None or not isinstance(output, Tensor) or not inp.is_floating_point():
                return
            if inp.requires_grad and not inp.is_leaf:
                inp.retain_grad()
            if output.requires_grad:
                output.retain_grad()
            records.append((name, inp, output))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name]
    n = len(x)
    xg = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(xg)
            values = point_loss(logits, y, loss)
            grad = None
            if values.requires_grad:
                values.sum().backward()
                grad = xg.grad
    finally:
        for h in handles:
            h.remove()
    if grad is None:
        missing = torch.ones(n, dtype=torch.bool)
        return GradientProbe(missing, torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), None,
                             _blocking(records, xg))
    flat = grad.detach().flatten(1).cpu()
    nonfinite = ~flat.isfinite().all(1)
    zero = (flat == 0).all(1)
    probe = GradientProbe(torch.zeros(n, dtype=torch.bool), nonfinite, zero, grad.detach())
    if zero.any():
        probe.blocking = _blocking(records, xg)
    return probe


def _blocking(records: list[tuple[str, Tensor, Tensor]], x: Tensor) -> list[str]:
    """Names of the innermost modules that stop the gradient (see :func:`gradient_probe`)."""
    found: list[str] = []
    for name, inp, out in records:
        if not (inp.requires_grad or inp is x):
            continue
        if not out.requires_grad:
            found.append(name)
            continue
        if out.grad is None or out.grad.shape[0] != inp.shape[0]:
            continue
        reaches = out.grad.flatten(1).ne(0).any(1)
        stops = inp.grad is None or bool((inp.grad.flatten(1).eq(0).all(1) & reaches).any())
        if reaches.any() and stops:
            found.append(name)
    unique = list(dict.fromkeys(found))
    return [n for n in unique if not any(o != n and o.startswith(n + ".") for o in unique)]


@dataclass(frozen=True)
class StabilityProbe:
    """Randomness (two forwards of the same input: prediction flips, largest relative logit
    change) and smoothness (share of points whose loss jumps under noise of L-inf size
    ``NOISE`` by more than ten times the first-order bound ``||grad||_1 * NOISE``)."""

    flips: float
    logit_change: float
    jumps: float
    smooth_points: int


def stability_probe(
    model: nn.Module, x: Tensor, y: Tensor, probe: GradientProbe, generator: torch.Generator, loss: str = "ce",
) -> StabilityProbe:
    with torch.no_grad():
        first, second = model(x), model(x)
        flips = float((first.argmax(1) != second.argmax(1)).float().mean())
        scale = first.abs().amax(1).clamp_min(1e-6)
        change = float(((first - second).abs().amax(1) / scale).max())
        usable = ~probe.unusable
        if probe.grad is None or not usable.any():
            return StabilityProbe(flips, change, float("nan"), 0)
        xs, ys, grad = x[usable], y[usable], probe.grad[usable.to(probe.grad.device)]
        base = point_loss(model(xs), ys, loss)
        bound = 10 * grad.flatten(1).abs().sum(1) * NOISE + 1e-4
        jumped = torch.zeros(len(xs), dtype=torch.bool, device=xs.device)
        for _ in range(NOISE_DRAWS):
            noise = ((torch.rand(xs.shape, generator=generator) * 2 - 1) * NOISE).to(xs.device)
            moved = point_loss(model((xs + noise).clamp(0, 1)), ys, loss)
            jumped |= (moved - base).abs() > bound
    return StabilityProbe(flips, change, float(jumped.float().mean()), int(len(xs)))


@dataclass(frozen=True)
class OutputProbe:
    """Whether the outputs are probabilities (every row non-negative and summing to 1),
    and the model's softmax module, if it has one that is not already under BPDA."""

    probabilities: bool
    share: float  # of the sample's output rows that are non-negative and sum to 1 (within 1e-3)
    softmax_module: str | None
    softmax_under_bpda: bool


def output_probe(model: nn.Module, x: Tensor) -> OutputProbe:
    with torch.no_grad():
        out = model(x).double()
    rows = (out >= -1e-6).all(1) & ((out.sum(1) - 1).abs() < 1e-3)
    share = float(rows.float().mean())
    probabilities = share > PROBABILITY_SHARE
    name, wrapped = None, False
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Softmax) or (module_name and "softmax" in module_name.rsplit(".", 1)[-1].lower()):
            name = module_name
            wrapped = type(module).__name__ == "IdentityBackward" or any(
                type(m).__name__ == "IdentityBackward" for n, m in model.named_modules()
                if n and (module_name == n or module_name.startswith(n + ".")))
            break
    return OutputProbe(probabilities, share, name, wrapped)
