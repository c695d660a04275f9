"""Small building blocks shared by the architectures: activations and size checks."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from robeval.errors import RobevalError

#: Activation names accepted by every architecture's ``activation`` argument.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (``relu``, ``gelu`` or ``silu``).

    Activations are never in-place, so gradients w.r.t. inputs (attacks, gradient-norm
    regularisers, double backprop) are always safe to take.
    """
    return ACTIVATIONS[check_activation(name)]()


def check_activation(name: str) -> str:
    """The canonical (lower-case) activation name; unknown names raise a RobevalError."""
    key = str(name).strip().lower()
    if key in ACTIVATIONS:
        return key
    close = difflib.get_close_matches(key, list(ACTIVATIONS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise RobevalError(
        f"unknown activation {name!r}; {hint}use one of {', '.join(sorted(ACTIVATIONS))}"
    )


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a convolution or pooling layer (floor mode, dilation 1)."""
    return (size + 2 * padding - kernel) // stride + 1


def require_input_size(arch: str, input_size: int, final_size: Callable[[int], int]) -> int:
    """Check that ``input_size`` leaves a non-empty feature map; return the final size.

    ``final_size`` maps an input size to the spatial size of the last feature map. A too
    small input raises a :class:`RobevalError` naming the smallest size that works.
    """
    out = final_size(input_size)
    if out >= 1:
        return out
    minimum = next((s for s in range(1, 4097) if final_size(s) >= 1), None)
    need = f"at least {minimum}x{minimum}" if minimum else "larger"
    raise RobevalError(
        f"architecture {arch!r} needs input images {need} with these arch args, "
        f"got {input_size}x{input_size}; resize the data or pick an architecture such as "
        "'small-cnn'"
    )


def require_positive(arch: str, **values: int) -> None:
    """Reject non-positive widths/sizes such as ``hidden=0``."""
    for key, value in values.items():
        if value < 1:
            raise RobevalError(f"arch arg {key} of {arch!r} must be >= 1, got {value}; fix it")


def require_probability(arch: str, **values: float) -> None:
    """Reject dropout rates outside [0, 1)."""
    for key, value in values.items():
        if not 0.0 <= value < 1.0:
            raise RobevalError(
                f"arch arg {key} of {arch!r} must be in [0, 1), got {value}; fix it"
            )
