"""Build frozen dataclass configs (attacks, objectives, ...) from user-typed parameters.

Values arrive as strings or numbers from the CLI or YAML; they are checked against the
dataclass field types, so ``pgd:steps=ten`` or ``pgd:stepz=10`` fail with one clear
message instead of a traceback deep inside the attack.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from robeval.errors import RobevalError
from robeval.params import parse_value

C = TypeVar("C")


def build_config(cls: type[C], params: dict[str, Any], *, what: str) -> C:
    """Instantiate dataclass ``cls`` from ``params``, coercing and checking each value."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise RobevalError(
                f"{what} has no parameter {key!r}; {hint}its parameters are {', '.join(fields)}"
            )
        kwargs[key] = coerce(raw, hints[key], what=f"{what} parameter {key!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RobevalError(f"invalid {what} parameters {params}: {exc}") from None


def coerce(value: Any, annotation: Any, *, what: str) -> Any:
    """Convert ``value`` to ``annotation`` (bool, int, float, str, Literal, Optional, tuple)."""
    if isinstance(value, str) and annotation is not str:
        value = parse_value(value)
    origin = get_origin(annotation)
    if origin is Literal:
        allowed = get_args(annotation)
        text = str(value).lower() if isinstance(value, str) else value
        if text not in allowed:
            raise RobevalError(f"{what} must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return text
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, what=what)
            except RobevalError as exc:
                errors.append(str(exc))
        raise RobevalError(errors[0] if errors else f"{what}: cannot read {value!r}")
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else str(value).split("/")
        (item_type, *_rest) = get_args(annotation) or (Any,)
        return tuple(coerce(v, item_type, what=what) for v in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise RobevalError(f"{what} must be true or false; got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise RobevalError(f"{what} must be an integer; got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RobevalError(f"{what} must be a number; got {value!r}")
        return float(value)
    if annotation is str:
        return str(value)
    return value


def non_default_params(config: Any) -> dict[str, Any]:
    """The fields of a dataclass instance that differ from their defaults."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if value != default:
            out[f.name] = value
    return out
