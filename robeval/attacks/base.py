"""Shared pieces of the attack contract.

An attack is a frozen dataclass (its configuration) that is called as
``attack(model, x, y, *, eps, generator=None, target=None) -> x_adv``: ``x`` holds images
in [0, 1], ``y`` the labels, ``eps`` the budget in the attack's ``norm`` on that [0, 1]
scale. It must not mutate ``x``, change the model's train/eval mode, or accumulate
parameter gradients. It is *not* trusted to respect its budget: the runner checks every
batch (:mod:`robeval.eval.checks`) and alone decides success.

Two kinds of attack share this call:

* *budgeted* attacks (FGSM, PGD) search inside the eps-ball; the runner calls them once
  per eps.
* *minimal-norm* attacks (``minimal = True``: DeepFool, C&W) search for the smallest
  adversarial perturbation with no bound. Called with ``eps=math.inf`` they return that
  adversarial for every sample where the search succeeded (and ``x`` where it failed);
  with a finite ``eps`` they return it only where it lies inside the eps-ball and ``x``
  elsewhere (:func:`restrict_to_ball`). The runner calls them once, unbounded, and reads
  every eps of the grid off the per-sample norms.

Attacks with ``targeted = True`` accept ``target`` (a label tensor like ``y``) and then
try to make the model predict ``target`` instead of merely anything but ``y``.

What ``eps`` means depends on the attack's ``norm``:

* ``linf``, ``l2``, ``l1``, ``l0`` (:data:`BALL_NORMS`): eps bounds ``||x_adv - x||`` in
  that norm (``l0``: the number of entries changed); the runner checks it. ``l1`` is
  for the attacks that search in it (``fmn``, ``apgd``).
* ``field``: eps bounds a deformation's vector field, ``max_pixel ||tau||_2`` in pixels
  (ADef). Such attacks return a :class:`Deformation`; the runner re-applies the field to
  check that the images are that deformation and measures the field itself.
* ``scale`` (noise attacks): eps is the noise's scale, not a bound on the pixel change;
  the runner checks the [0, 1] box only.

``gradient_free = True`` marks attacks that only query the model's outputs (noise,
salt-and-pepper, Fourier and filter attacks); only these run on black-box models.

Every attack declares ``nested`` (a ``ClassVar[bool]``; there is no default, and
:mod:`robeval.attacks.registry` refuses to register a class without it). ``nested = True``:
an adversarial found at a smaller eps also answers every larger eps (budgeted searches in
a ball such as FGSM and PGD, whose runner reuses earlier successes along the grid; and
minimal-norm searches). ``nested = False`` marks attacks whose answer at a smaller eps is
not an answer at a larger one (random noise of a given scale, Fourier perturbations of a
given size, filters): the runner then attacks every clean-correct point at every eps
instead of reusing earlier successes, and the curve may rise with eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robeval.attacks import rng

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
BALL_NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")
L0_TOL = 1e-6  # an entry counts as changed in L0 when it moved by more than this


class Attack(Protocol):
    """What the runner needs from an attack configuration."""

    name: ClassVar[str]
    minimal: ClassVar[bool]  # a minimal-norm search (one unbounded call gives every eps)
    targeted: ClassVar[bool]  # accepts ``target``
    nested: ClassVar[bool]  # an adversarial at a smaller eps answers every larger eps (declared, no default)
    norm: str

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor: ...


def is_minimal(attack: object) -> bool:
    """Whether ``attack`` is a minimal-norm search (see the module docstring)."""
    return bool(getattr(attack, "minimal", False))


def is_targeted(attack: object) -> bool:
    """Whether ``attack`` has a targeted mode."""
    return bool(getattr(attack, "targeted", False))


def is_gradient_free(attack: object) -> bool:
    """Whether ``attack`` only queries the model's outputs (``gradient_free = True``), so it
    also runs on black-box models such as an ONNX graph run by onnxruntime."""
    return bool(getattr(attack, "gradient_free", False))


def is_nested(attack: object) -> bool:
    """Whether an adversarial found at a smaller eps also answers every larger eps: the
    attack's own ``nested`` declaration, with no default (an attack that declares none is
    an :class:`~robeval.errors.AttackContractError`). Only while
    :data:`robeval.attacks.registry.REQUIRE_NESTED` is off does a missing declaration
    still read as ``True``, the old default."""
    value = getattr(attack, "nested", None)
    if isinstance(value, bool):
        return value
    from robeval.attacks import registry
    from robeval.errors import AttackContractError

    if value is None and not registry.REQUIRE_NESTED:
        return True
    what = getattr(attack, "name", None) or type(attack).__name__
    raise AttackContractError(
        f"attack {what!r} does not declare `nested` as a bool (got {value!r}); its class must say "
        "`nested: ClassVar[bool] = True` (adversarials at a smaller eps answer larger ones) or `= False`"
    )


@dataclass(frozen=True)
class Deformation:
    """What a deformation attack (``norm = "field"``) returns: the deformed images and the
    vector field ``(N, 2, H, W)`` in pixels such that ``x_adv = deform(x, field)``
    (:func:`robeval.attacks.adef.deform`); a zero field where the input is returned."""

    x_adv: Tensor
    field: Tensor


def field_norms(field: Tensor) -> Tensor:
    """``||tau||_T = max over pixels of the Euclidean length of the displacement`` (ADef,
    Alaifari et al. 2019, Sec. 2), per sample, in pixels."""
    return field.detach().norm(p=2, dim=1).flatten(1).amax(dim=1)


def all_norms(delta: Tensor) -> dict[str, Tensor]:
    """Per-sample ``l0`` (number of entries changed by more than ``L0_TOL``), ``l2`` and
    ``linf`` norms of ``delta``, the three bounds of smooth-kernels appendix B."""
    flat = delta.detach().flatten(1)
    return {
        "l0": (flat.abs() > L0_TOL).sum(dim=1).to(flat.dtype),
        "l2": flat.norm(p=2, dim=1),
        "linf": flat.abs().amax(dim=1),
    }


def restrict_to_ball(x: Tensor, x_adv: Tensor, eps: float, norm: str) -> Tensor:
    """``x_adv`` where ``||x_adv - x|| <= eps`` in ``norm``, ``x`` elsewhere: how a
    minimal-norm attack answers a bounded query (``eps = inf`` keeps every ``x_adv``)."""
    if math.isinf(eps):
        return x_adv
    # Compared in float64, exactly as the runner compares the stored norms with each eps.
    inside = perturbation_norms(x_adv - x, norm).double() <= eps
    return torch.where(inside.view(-1, *([1] * (x.dim() - 1))), x_adv, x)


def perturbation_norms(delta: Tensor, norm: str) -> Tensor:
    """Per-sample ``||delta||_p`` over all but the batch dimension (``linf``, ``l2``, ``l1``
    or ``l0``)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat.abs() > L0_TOL).sum(dim=1).to(flat.dtype)
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
    same start on every device; a :class:`~robeval.attacks.rng.PointGenerator` draws
    each row from its point's own generator (direction, then radius).
    """
    shape = like.shape
    if norm == "linf":
        noise = rng.rand(shape, generator, like.dtype) * 2 - 1
        return (noise * eps).to(like.device)
    dim = like[0].numel()
    direction = rng.randn(shape, generator, like.dtype)
    direction = normalized_step(direction, "l2")
    radius = rng.rand((shape[0],), generator, like.dtype) ** (1.0 / dim)
    return (direction * (eps * radius).view(-1, *([1] * (len(shape) - 1)))).to(like.device)


def loss_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``d/dx sum_i CE(model(x_i), y_i)``; parameter gradients are neither computed nor stored.

    Untargeted attacks ascend it with ``y`` the labels; targeted attacks descend it with
    ``y`` the targets. A model whose forward pass cuts the graph (``detach``, ``no_grad``)
    gives a zero gradient, as a naive attack sees it; the ``unavailable-gradients``
    indicator reports it."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x) if loss.requires_grad else (torch.zeros_like(x),)
    return grad
