"""Attack presets: ``NAME:preset=foolbox2`` sets another library's defaults (and its
search behaviour) for every parameter the user did not give.

``preset=robeval`` (the default) is robeval's own configuration, unchanged. ``preset=
foolbox2`` is Foolbox 2.4.0's (Rauber, Brendel and Bethge, "Foolbox: A Python toolbox to
benchmark the robustness of machine learning models", 2017; release 2.4.0, 2020): the
defaults of its attack's ``as_generator`` and, where Foolbox 2 searched differently from
robeval (FGSM's line search over eps, PGD's exponential-then-binary search over eps,
DeepFool's per-step overshoot, C&W's per-sample early abort, salt and pepper's
repetitions), that search. The smooth-kernels paper (Table 1) ran "the default
parameters in Foolbox" and counted every failed search as robustness; with
``eps=inf`` a ``foolbox2`` attack returns ``x`` where its search fails, so such a point
stays classified correctly.

An explicit parameter always wins: ``pgd:preset=foolbox2,steps=10`` is Foolbox 2.4's PGD
with 10 iterations. :func:`with_presets` makes that work for ``get``, the CLI, YAML and
direct construction alike (``PGD(preset="foolbox2", steps=10)``): it wraps the
dataclass's ``__init__`` and fills the preset's values in for the keyword arguments not
passed. ``dataclasses.replace`` passes every field, so a replaced copy keeps its values.

Each attack's table of Foolbox 2.4 values is next to the attack (``FOOLBOX2_DEFAULTS`` in
its module), with the file and line of Foolbox 2.4.0 each value comes from; ``robeval ls
attacks NAME`` describes what ``preset=foolbox2`` changes for that attack.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from robeval.errors import RobevalError

Preset = Literal["robeval", "foolbox2"]
PRESETS: tuple[str, ...] = ("robeval", "foolbox2")
DEFAULT_PRESET = "robeval"
FOOLBOX2 = "foolbox2"

T = TypeVar("T", bound=type)


def check_preset(preset: object) -> str:
    """``preset`` if it is a known preset; else a one-line :class:`RobevalError`."""
    if preset not in PRESETS:
        raise RobevalError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    return str(preset)


def with_presets(values: Mapping[str, Mapping[str, Any]], *, neutral: Mapping[str, Any] | None = None
                 ) -> Callable[[T], T]:
    """Class decorator, placed above ``@dataclass``: ``cls(preset=NAME, **given)`` fills
    ``values[NAME]`` in for every field not in ``given``.

    ``neutral``: the fields that exist only for a preset (``preset`` itself, Foolbox's own
    knobs such as FGSM's ``epsilons``) with their values under the default preset; they
    are left out of :func:`stable_params`, so adding them changes no cache key of a run
    that does not use them. The class gets ``preset_values`` and ``preset_neutral``.
    """
    tables = {name: dict(table) for name, table in values.items()}
    for name in tables:
        check_preset(name)
    rest = {"preset": DEFAULT_PRESET, **(neutral or {})}

    def decorate(cls: T) -> T:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for table in tables.values() for k in table if k not in fields] + [
            k for k in rest if k not in fields]
        if unknown:
            raise TypeError(f"{cls.__qualname__}: preset fields {unknown} are not dataclass fields")
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, **kwargs: Any) -> None:
            preset = check_preset(kwargs.get("preset", DEFAULT_PRESET))
            for key, value in tables.get(preset, {}).items():
                kwargs.setdefault(key, value)
            init(self, **kwargs)

        cls.__init__ = __init__  # type: ignore[misc]
        cls.preset_values = tables  # type: ignore[attr-defined]
        cls.preset_neutral = rest  # type: ignore[attr-defined]
        return cls

    return decorate


def preset_defaults(cls: type, preset: str) -> dict[str, Any]:
    """Every field's value in ``cls(preset=preset)``: the defaults with the preset's table over them."""
    check_preset(preset)
    table = getattr(cls, "preset_values", {}).get(preset, {})
    return {**{f.name: _default(f) for f in dataclasses.fields(cls)}, **table, "preset": preset}


def _default(f: dataclasses.Field) -> Any:
    """A field's default as :func:`robeval.configs.non_default_params` reads it (None when it has none)."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None if f.default is dataclasses.MISSING else f.default


def non_preset_params(attack: Any) -> dict[str, Any]:
    """The fields that differ from what the attack's preset sets, plus ``preset`` itself
    when it is not the default: ``pgd:preset=foolbox2,steps=10`` rather than every
    Foolbox value spelled out. For an attack at the default preset (or one without
    presets) it is exactly :func:`robeval.configs.non_default_params`.

    Use it for canonical names: ``non_default_params`` compares with the class defaults,
    so ``pgd:preset=foolbox2,steps=10`` would lose ``steps=10`` (robeval's default)
    and read back as the preset's 40 steps."""
    preset = getattr(attack, "preset", DEFAULT_PRESET)
    base = preset_defaults(type(attack), preset) if hasattr(type(attack), "preset_values") else {
        f.name: _default(f) for f in dataclasses.fields(attack)}
    out = {f.name: getattr(attack, f.name) for f in dataclasses.fields(attack)
           if f.name != "preset" and getattr(attack, f.name) != base[f.name]}
    return {"preset": preset, **out} if preset != DEFAULT_PRESET else out


def stable_params(attack: Any) -> dict[str, Any]:
    """``dataclasses.asdict(attack)`` without the preset-only fields at their neutral
    values: what a run's cache key should hash, so that the fields added for presets
    change neither the keys nor the per-point seeds of runs that do not use them."""
    neutral = getattr(type(attack), "preset_neutral", {})
    return {k: v for k, v in dataclasses.asdict(attack).items() if not (k in neutral and v == neutral[k])}


def mark_minimal(attack: Any, minimal: bool) -> None:
    """Set ``minimal`` on one instance (a frozen dataclass): a budgeted attack whose
    ``foolbox2`` preset is a minimal-norm search (FGSM's line search, PGD's binary
    search) is one for the runner, which asks :func:`robeval.attacks.base.is_minimal`
    of the instance; the class keeps its declaration (``robeval ls`` shows the default)."""
    if minimal != type(attack).minimal:
        object.__setattr__(attack, "minimal", minimal)


__all__ = ["DEFAULT_PRESET", "FOOLBOX2", "PRESETS", "Preset", "check_preset", "mark_minimal",
           "non_preset_params", "preset_defaults", "stable_params", "with_presets"]
