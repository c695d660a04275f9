"""The architecture registry and :func:`build_model`, the one way to construct a net.

Each architecture is a factory registered in :data:`architectures` with the signature
``factory(*, in_channels, num_classes, input_size, activation="relu", **arch_args)``.
The arch args it accepts are read from its signature, so a new architecture only needs
the ``@architectures.register(name)`` decorator.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from robeval.errors import RobevalError
from robeval.models.layers import check_activation
from robeval.params import parse_named
from robeval.registry import Registry

ArchFactory = Callable[..., nn.Module]

#: All architectures by name (``robeval ls architectures``).
architectures: Registry[ArchFactory] = Registry("architecture")

#: Arguments every factory takes that are not arch args (they come from the data set).
_DATA_ARGS = ("in_channels", "num_classes", "input_size")


def arch_defaults(name: str) -> dict[str, Any]:
    """The arch args of architecture ``name`` (including ``activation``) and their defaults."""
    factory = architectures.get(name)
    defaults: dict[str, Any] = {}
    for param in inspect.signature(factory).parameters.values():
        if param.name in _DATA_ARGS or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        defaults[param.name] = None if param.default is param.empty else param.default
    return defaults


def resolve_arch(arch: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """Canonical name and full arch-args dict for ``arch`` (e.g. ``"mnist-cnn:hidden=100"``).

    Defaults are filled in, so the result is what a checkpoint records in its metadata.
    ``overrides`` win over the values in the string. Unknown or ill-typed arch args raise
    a :class:`RobevalError` listing the accepted ones.
    """
    name, params = parse_named(arch, kind="architecture")
    name = name.lower()
    defaults = arch_defaults(name)  # raises for unknown names, with "did you mean"
    given = {**params, **{k.replace("-", "_"): v for k, v in overrides.items()}}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(defaults), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        accepted = ", ".join(f"{k}={_show(v)}" for k, v in defaults.items())
        raise RobevalError(
            f"architecture {name!r} has no arch arg {', '.join(map(repr, unknown))}; "
            f"{hint}accepted (with defaults): {accepted}"
        )
    resolved = dict(defaults)
    for key, value in given.items():
        resolved[key] = _coerce(name, key, value, defaults[key])
    if "activation" in resolved:
        resolved["activation"] = check_activation(resolved["activation"])
    return name, resolved


def build_model(
    arch: str, *, in_channels: int, num_classes: int, input_size: int, **overrides: Any
) -> nn.Module:
    """Build architecture ``arch`` (optionally ``"name:key=value,..."``) for a data set.

    ``overrides`` are arch args that win over those in the string. The net returns
    logits for *normalised* inputs; wrap it in :class:`~robeval.models.Normalize` to feed
    it [0,1] images.
    """
    for key, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("input_size", input_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RobevalError(f"{key} must be a positive integer, got {value!r}; fix it")
    name, args = resolve_arch(arch, **overrides)
    factory = architectures.get(name)
    return factory(
        in_channels=in_channels, num_classes=num_classes, input_size=input_size, **args
    )


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(arch: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the default; ints are accepted for floats."""
    if default is None:
        return value
    expected = type(default)
    ok: bool
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, expected)
    if not ok:
        kind = _TYPE_NAMES.get(expected, expected.__name__)
        raise RobevalError(
            f"arch arg {key} of {arch!r} must be {kind} "
            f"(default {_show(default)}), got {value!r}; fix it"
        )
    return value


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
