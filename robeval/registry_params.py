"""The parameters of a registry entry, with their defaults, read from the entry itself: a
frozen dataclass's fields (attacks, objectives, regularisers) or a factory's keyword
arguments (architectures). ``robeval ls`` shows them, so no one has to mistype a
parameter to learn the names."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

#: Factory arguments that come from the data set, not from the user.
DATA_ARGS = frozenset({"in_channels", "num_classes", "input_size"})


@dataclass(frozen=True)
class Param:
    """One parameter as a user types it: ``name=default`` of type ``kind``."""

    name: str
    default: str  # as typed after `=`; "required" when there is none
    kind: str  # e.g. "int", "linf|l2", "float or none"

    def __str__(self) -> str:
        return f"{self.name}={self.default}"


def format_value(value: Any) -> str:
    """A default as the user would type it (``true``, ``0.25``, ``none``, ``a/b``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "/".join(format_value(v) for v in value) if value else "()"
    return str(value)


_SIMPLE = {"str": "text", "bool": "true|false"}


def type_name(annotation: Any) -> str:
    """``Literal["linf", "l2"]`` -> ``linf|l2``; ``float | None`` -> ``float or none``."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "|".join(format_value(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(type_name(o) for o in options)
        return f"{text} or none" if len(options) < len(get_args(annotation)) else text
    if origin is tuple:
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"{type_name(args[0]) if args else 'value'}/..."
    if isinstance(annotation, type):
        return _SIMPLE.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def parameters(obj: object) -> list[Param]:
    """The user-settable parameters of a registry entry (empty when it has none that can be
    read: data sets, model sources, indicators describe theirs in their summary)."""
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        return _dataclass_params(obj)
    if callable(obj) and (inspect.isfunction(obj) or isinstance(obj, type)):
        return _signature_params(obj)
    return []


def _dataclass_params(cls: type) -> list[Param]:
    try:
        hints = get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: show the fields untyped
        hints = {}
    aliases: dict[str, str] = getattr(cls, "aliases", {}) or {}
    typed_as: dict[str, str] = {}
    for key, name in aliases.items():
        typed_as.setdefault(name, key)  # the first alias is the documented one
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            default = format_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = format_value(f.default_factory())
        else:
            default = "required"
        out.append(Param(typed_as.get(f.name, f.name), default, type_name(hints.get(f.name, Any))))
    return out


def _signature_params(factory: Any) -> list[Param]:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return []
    out = []
    for param in signature.parameters.values():
        if param.name in DATA_ARGS or param.name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.kind is not param.KEYWORD_ONLY:
            return []  # positional arguments: not a name:key=value factory
        default = "required" if param.default is param.empty else format_value(param.default)
        annotation = param.annotation
        kind = _SIMPLE.get(annotation, annotation) if isinstance(annotation, str) else type_name(annotation)
        out.append(Param(param.name, default, "" if annotation is param.empty else kind))
    return out
