"""Parsing of the ``name:key=value,key=value`` strings users type for attacks,
architectures and data sets, and of epsilon lists such as ``0,2/255,8/255``."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from robeval.errors import RobevalError

ParamValue = bool | int | float | str | None


def parse_number(text: str, *, what: str = "number") -> float:
    """``"8/255"`` -> 0.0313..., ``"0.1"`` -> 0.1, ``"1e-3"`` -> 0.001."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(Fraction(num.strip()) / Fraction(den.strip()))
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise RobevalError(
            f"cannot read {what} {text!r}; write a number such as 0.03, 8/255 or 1e-3"
        ) from None


UNBOUNDED = ("unbounded", "inf")


def parse_eps_list(text: str | list[Any] | tuple[Any, ...]) -> tuple[float, ...]:
    """Parse ``"0,2/255,8/255"`` (or a list of numbers/strings) into sorted unique floats >= 0.

    ``unbounded`` (or ``inf``) asks minimal-norm attacks for their accuracy with no bound,
    where a failed search counts as robust (smooth-kernels Table 1); it becomes ``inf``.
    """
    items: list[Any]
    if isinstance(text, str):
        items = text.replace(" ", "").split(",")
        if items == [""]:
            items = []
        elif "" in items:
            position = items.index("") + 1
            raise RobevalError(
                f"the eps list {text!r} has an empty entry (entry {position} of {len(items)}); "
                "remove the extra comma, e.g. --eps 0,2/255,8/255"
            )
    else:
        items = list(text)
    if not items:
        raise RobevalError("the eps list is empty; give e.g. --eps 0,2/255,8/255")
    values = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() in UNBOUNDED:
            values.append(float("inf"))
            continue
        value = item if isinstance(item, int | float) else parse_number(str(item), what="eps")
        if math.isnan(value) or not value >= 0 or (value == float("inf") and not isinstance(item, float)):
            raise RobevalError(f"eps must be >= 0 or `unbounded`, got {item!r}; fix --eps")
        values.append(float(value))
    return tuple(sorted(set(values)))


NORM_NAMES = {"linf": "L-inf", "l2": "L2", "l1": "L1", "l0": "L0"}


def box_diameter(norm: str, input_shape: tuple[int, ...]) -> float | None:
    """The largest ``||x' - x||`` between two images of the [0, 1] box in ``norm``
    (``linf``: 1, ``l2``: the square root of the number of entries, ``l1`` and ``l0``: the
    number of entries); ``None`` for measures that are no pixel norm (deformation fields, noise scales)."""
    entries = math.prod(input_shape)
    return {"linf": 1.0, "l2": math.sqrt(entries), "l1": float(entries), "l0": float(entries)}.get(norm)


def large_eps_warnings(eps_grid: tuple[float, ...], norms: list[str], input_shape: tuple[int, ...]) -> list[str]:
    """One line per (eps, norm) of the grid whose ball holds the whole [0, 1] box, so a
    bounded attack can reach any image (usually 8 typed for 8/255); L2 budgets above 1
    are ordinary and warned only past the box's diameter."""
    lines = []
    for norm in dict.fromkeys(norms):
        diameter = box_diameter(norm, input_shape)
        if diameter is None:
            continue
        for eps in eps_grid:
            if math.isfinite(eps) and eps >= diameter:
                what = "the [0, 1] pixel range" if norm == "linf" else (
                    f"the largest {NORM_NAMES[norm]} distance between two images of this data set ({diameter:g})")
                lines.append(
                    f"eps {eps:g} is at least {what}; every {NORM_NAMES[norm]}-bounded attack can reach any image "
                    "at this budget (fine as a sanity check; else write the budget as a fraction, e.g. 8/255)"
                )
    return lines


def parse_value(text: str) -> ParamValue:
    """Read one parameter value: bools, none, ints, floats, fractions, else the string."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(low)
    except ValueError:
        pass
    try:
        return parse_number(low)
    except RobevalError:
        return text.strip()


def parse_named(text: str, *, kind: str) -> tuple[str, dict[str, ParamValue]]:
    """Split ``"pgd:norm=l2,steps=40"`` into ``("pgd", {"norm": "l2", "steps": 40})``."""
    name, _, rest = text.strip().partition(":")
    if not name:
        raise RobevalError(f"empty {kind} name in {text!r}; write e.g. NAME or NAME:key=value")
    params: dict[str, ParamValue] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise RobevalError(
                f"cannot read {kind} parameter {part!r} in {text!r}; write key=value, "
                f"e.g. {name}:steps=40"
            )
        key = key.strip().replace("-", "_")
        if key in params:
            raise RobevalError(
                f"{kind} {text!r} gives {key} twice; keep one {key}=VALUE"
            )
        params[key] = parse_value(value)
    return name.strip(), params


def format_named(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_named` (keys sorted), e.g. ``pgd:norm=l2,steps=40``."""
    if not params:
        return name
    body = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(params.items()))
    return f"{name}:{body}"


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
