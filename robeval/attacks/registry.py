"""The attack registry: names -> attack config classes (frozen dataclasses)."""

from __future__ import annotations

from typing import Any

from robeval.configs import build_config, non_default_params
from robeval.params import format_named, parse_named
from robeval.registry import Registry

attacks: Registry[type] = Registry("attack")


def get(spec: str, **params: Any) -> Any:
    """An attack from a name or ``name:key=value,...`` string, e.g. ``get("pgd", steps=40)``.

    Keyword ``params`` override those in the string. Unknown names or parameters, and
    values of the wrong type, raise :class:`robeval.errors.RobevalError`.
    """
    name, parsed = parse_named(spec, kind="attack")
    cls = attacks.get(name)
    return build_config(cls, {**parsed, **params}, what=f"attack {name!r}")


def canonical_name(attack: Any) -> str:
    """The attack with its non-default parameters, e.g. ``pgd:norm=l2,steps=40``."""
    return format_named(attack.name, non_default_params(attack))
