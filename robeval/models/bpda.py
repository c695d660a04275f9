"""BPDA with the identity: attack through non-differentiable parts of a model.

Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML 2018,
"Obfuscated Gradients Give a False Sense of Security", Sec. 4.1): a defence built from a
step ``f`` whose gradient is useless (zero, as for rounding or a JPEG round trip; missing,
as for a ``detach``; or vanishing, as for a saturated softmax) is attacked by running
``f`` exactly on the forward pass and replacing its derivative by that of ``g(x) = x``
on the backward pass, which is a good approximation when ``f(x) ≈ x``.

* :class:`IdentityBackward` wraps one module ``f``: ``forward(x) == f(x)`` bit for bit,
  ``d forward / d x = I``.
* :func:`apply_bpda` wraps named submodules of a model in place.
* :func:`declared_bpda` reads the names a model declares itself in an attribute
  ``bpda_modules`` (``file.py:factory`` models do so through their info dict's ``"bpda"``
  key).

**Names.** Submodules are named by their dotted names in ``model.named_modules()``
(``quantize``, ``features.1``). Models reach attacks wrapped (robeval's ``Normalize``
puts the net under ``model``, the runner's ``PassCounter`` adds another ``model``), so a
name not found at the top is looked up relative to the module's inner ``.model`` or
``.net`` attribute, then to that one's, and so on down the chain: ``quantize`` finds
``model.quantize`` in ``Normalize(net)`` and ``model.model.quantize`` in
``PassCounter(Normalize(net))``. The first (outermost) match wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from robeval.errors import RobevalError
from robeval.registry import unknown_name_message

__all__ = ["IdentityBackward", "apply_bpda", "declared_bpda", "resolve_module_name"]

#: Attributes through which :func:`apply_bpda` looks into wrappers, in this order.
INNER_ATTRIBUTES = ("model", "net")


class IdentityBackward(nn.Module):
    """``module`` on the forward pass, the identity on the backward pass (BPDA, Athalye
    et al. 2018, Sec. 4.1): ``x + (module(x) - x).detach()``.

    The forward value is exactly ``module(x)`` (it is returned as computed, not
    recomputed as ``x + (f(x) - x)``, which could differ in the last bit); only the
    autograd graph is that of the identity. ``module`` must return a tensor of the
    input's shape; anything else raises a :class:`RobevalError`.
    """

    def __init__(self, module: nn.Module, name: str | None = None) -> None:
        super().__init__()
        self.module = module
        self.label = name or type(module).__name__

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():  # the module's own graph is never used
            out = self.module(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise RobevalError(
                f"BPDA with the identity needs module {self.label!r} to return its input's shape, "
                f"but it maps {tuple(x.shape)} to {shape}; choose a module whose output has the "
                "input's shape"
            )
        if not torch.is_grad_enabled():
            return out
        return _IdentityGrad.apply(x, out)

    def extra_repr(self) -> str:
        return f"bpda={self.label!r}"


class _IdentityGrad(torch.autograd.Function):
    """Returns ``value`` (bit for bit) with the gradient of the identity in ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor) -> Tensor:  # type: ignore[override]
        ctx.dtype = x.dtype
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad.to(ctx.dtype), None


def _inner(module: nn.Module) -> tuple[str, nn.Module] | None:
    for attribute in INNER_ATTRIBUTES:
        inner = getattr(module, attribute, None)
        if isinstance(inner, nn.Module):
            return attribute, inner
    return None


def _wrapper_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[("", model), ("model.", model.model), ...]``: the model and its inner modules."""
    chain: list[tuple[str, nn.Module]] = [("", model)]
    seen = {id(model)}
    while (step := _inner(chain[-1][1])) is not None and id(step[1]) not in seen:
        seen.add(id(step[1]))
        chain.append((f"{chain[-1][0]}{step[0]}.", step[1]))
    return chain


def resolve_module_name(model: nn.Module, name: str) -> str:
    """The dotted name in ``model.named_modules()`` that ``name`` refers to (the name
    itself, or the name under the inner ``.model``/``.net`` chain; see the module
    docstring). Unknown names raise a :class:`RobevalError` with a "did you mean"."""
    key = name.strip()
    modules = dict(model.named_modules())
    if key:
        for prefix, _ in _wrapper_chain(model):
            if prefix + key in modules:
                return prefix + key
    known = [n for n in modules if n]
    listing = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
    if not key:
        raise RobevalError(
            "BPDA needs the dotted name of a submodule, not an empty name (the whole model "
            f"cannot be replaced); the model's modules are {listing}"
        )
    # Suggest names as written at the top or relative to an inner wrapper.
    relative = [n[len(prefix):] for prefix, _ in _wrapper_chain(model)[1:] for n in known if n.startswith(prefix)]
    choices = sorted({*known, *(n for n in relative if n)})
    hint = unknown_name_message("module", key, choices, see_also=False).split(" (known:")[0]
    raise RobevalError(f"BPDA: {hint} (the model's modules: {listing or 'none'})")


def apply_bpda(model: nn.Module, names: Sequence[str] | Iterable[str]) -> list[str]:
    """Replace each named submodule of ``model`` in place by ``IdentityBackward(sub)``.

    Names are dotted names as in ``model.named_modules()``, looked up at the top and
    then relative to the inner ``.model``/``.net`` wrappers (module docstring). A module
    that is already an :class:`IdentityBackward` is left alone. All names are resolved
    before anything is replaced, so an unknown name changes nothing. Returns the
    resolved dotted names (in ``model``) of the modules that now run with BPDA, in the
    order given, without duplicates: calling it twice returns the same list.
    """
    if isinstance(names, str):
        names = [names]
    resolved = list(dict.fromkeys(resolve_module_name(model, name) for name in names))
    for full in sorted(resolved, key=lambda n: -n.count(".")):  # inner modules first
        parent_name, _, child = full.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        current = parent.get_submodule(child)
        if isinstance(current, IdentityBackward) or isinstance(parent, IdentityBackward):
            continue
        setattr(parent, child, IdentityBackward(current, name=full))
    return resolved


def declared_bpda(model: nn.Module) -> tuple[str, ...]:
    """The module names ``model`` declares for BPDA: its attribute ``bpda_modules`` (a
    tuple or list of dotted names; one string counts as one name) and that of the inner
    ``.model``/``.net`` modules it wraps, outermost first, without duplicates. The names
    are returned as declared; :func:`apply_bpda` finds names relative to an inner module
    through the same chain."""
    found: list[str] = []
    for _, module in _wrapper_chain(model):
        declared = getattr(module, "bpda_modules", None)
        if declared is None:
            continue
        found += list(as_module_names(declared, what=f"{type(module).__name__}.bpda_modules"))
    return tuple(dict.fromkeys(found))


def as_module_names(value: object, *, what: str) -> tuple[str, ...]:
    """``value`` as a tuple of non-empty module names (a string is one name)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) and v.strip() for v in items):
        raise RobevalError(
            f"{what} must be a list of dotted module names such as ['quantize'], got {value!r}"
        )
    return tuple(v.strip() for v in items)
