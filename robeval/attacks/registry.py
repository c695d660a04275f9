"""The attack registry: names -> attack config classes (frozen dataclasses).

Every registered attack must *declare* whether it is nested (see
:mod:`robeval.attacks.base`): a ``nested: ClassVar[bool]`` class attribute, ``True`` when
an adversarial found at a smaller eps also answers every larger eps (budgeted searches in
a ball, minimal-norm searches), ``False`` when it does not (noise of a given scale,
Fourier and filter attacks). There is no default: a noise attack that forgot
``nested = False`` would otherwise be silently treated as nested (its successes at a
small eps reused at larger ones). The declaration may be made in the class body or
inherited from any base class that makes it in *its* body (a shared base such as the
noise attacks' ``_WorstOfK``, or a registered parent: ``FGM(FGSM)`` inherits FGSM's);
the :class:`~robeval.attacks.base.Attack` protocol's bare annotation does not count. It
must be a plain ``bool`` class attribute, not a dataclass field (nesting is a property of
the attack, not a parameter). :func:`attacks.register <AttackRegistry.register>` refuses
a class that breaks this rule, at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from robeval.attacks.presets import non_preset_params
from robeval.configs import build_config
from robeval.params import format_named, parse_named
from robeval.registry import Registry

# The registration check of ``nested``. On once every registered attack declares it.
REQUIRE_NESTED = True


def nested_declaration(cls: type) -> bool | None:
    """The ``nested`` that ``cls`` or one of its bases declares in its own body (the
    first along the MRO), or ``None`` where none does."""
    for klass in cls.__mro__:
        if klass is object:
            continue
        if "nested" in vars(klass):
            value = vars(klass)["nested"]
            return value if isinstance(value, bool) else None
    return None


def check_nested(cls: type, name: str) -> None:
    """Refuse an attack class that does not declare ``nested`` (see the module docstring)."""
    how = ("declare `nested: ClassVar[bool] = True` (an adversarial found at a smaller eps also answers every "
           "larger eps: budgeted searches in a ball, minimal-norm searches) or `nested: ClassVar[bool] = False` "
           "(it does not: noise of a given scale, Fourier or filter attacks)")
    if not isinstance(cls, type):
        raise TypeError(f"attack {name!r} must be a class (a frozen dataclass), not {cls!r}")
    if dataclasses.is_dataclass(cls) and any(f.name == "nested" for f in dataclasses.fields(cls)):
        raise TypeError(f"attack {name!r} ({cls.__qualname__}) makes `nested` a dataclass field; nesting is a "
                        f"property of the attack, not a parameter: {how}")
    for klass in cls.__mro__:
        if klass is object or "nested" not in vars(klass):
            continue
        value = vars(klass)["nested"]
        if not isinstance(value, bool):
            raise TypeError(f"attack {name!r} ({cls.__qualname__}) has `nested = {value!r}` in "
                            f"{klass.__qualname__}, not a bool: {how}")
        return
    raise TypeError(f"attack {name!r} ({cls.__qualname__}) does not declare whether it is nested: {how}")


class AttackRegistry(Registry[type]):
    """The attack :class:`~robeval.registry.Registry`, whose ``register`` also checks that
    the class declares ``nested`` (while :data:`REQUIRE_NESTED` is on)."""

    def register(self, name: str) -> Callable[[type], type]:
        add = super().register(name)

        def decorator(cls: type) -> type:
            if REQUIRE_NESTED:
                check_nested(cls, name)
            return add(cls)

        return decorator


attacks: AttackRegistry = AttackRegistry("attack")


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
    return format_named(attack.name, non_preset_params(attack))
