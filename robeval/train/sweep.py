"""A training sweep's combinations: ``--seeds 0,1,2`` x ``--sweep KEY=V1|V2|V3``.

``--seeds`` lists the seeds; each ``--sweep`` names one :class:`TrainSpec` setting (the
``robeval train`` flag names work too: ``regulariser``, ``weight-decay``) and its values,
separated by ``|``. Values are read as the setting's type (``lr=1e-3|1e-2`` are floats,
``n_train=none|512`` an optional int); ``regulariser`` takes one regulariser per value
(``none`` for none, ``+`` to join several: ``absum:lambda=0.1+snc:sigma=1``). When the
first value ends in ``key=value`` and the others are bare (no ``:`` or ``=``), the others
replace its last value: ``absum:lambda=0.01|0.1|1`` is ``absum:lambda=0.01``,
``absum:lambda=0.1`` and ``absum:lambda=1``. Several ``--sweep`` make a product.

The combinations run seeds outermost, then the sweeps in the order given, each in its
values' order, and each is named after its values: ``absum-lambda=0.1_seed=3``,
``lr=0.01_seed=0`` (the checkpoint ``OUT/NAME.pt``).
"""

from __future__ import annotations

import difflib
import itertools
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from robeval.errors import RobevalError
from robeval.params import parse_number
from robeval.train.spec import TrainSpec

#: Names people type for a setting (flag spellings) -> the TrainSpec field.
ALIASES = {"regulariser": "regularisers", "regularizer": "regularisers", "regularizers": "regularisers",
           "reg": "regularisers"}
#: Settings a sweep does not vary, and what to use instead.
NOT_SWEPT = {
    "seed": "give the seeds with --seeds 0,1,2",
    "out": "--out is the sweep's folder",
    "device": "the device does not change what is trained",
    "data_root": "the data folder does not change what is trained",
    "progress": "it is a display flag",
}
#: Settings whose values name themselves (``absum:lambda=0.1``): their checkpoint-name part has no ``KEY=``.
SELF_NAMED = ("regularisers", "objective", "arch", "dataset")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")
_JOIN = re.compile(r"\+(?=\s*[A-Za-z])")  # "+" before a name, not the "+" of 1e+3
MAX_NAME = 200  # bytes, below the usual 255 limit with room for ".pt.resume"


@dataclass(frozen=True)
class SweepAxis:
    """One swept setting: the TrainSpec ``field`` and its ``values`` (typed), with the
    text of each (for names and sweep.csv)."""

    field: str
    values: tuple[Any, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class Combination:
    """One training of a sweep: its name, seed, swept values and full spec."""

    name: str
    seed: int
    values: tuple[tuple[str, str], ...]  # (field, value text) per axis
    spec: TrainSpec


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``: whole numbers >= 0, each once."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or "" in items:
        raise RobevalError(f"--seeds {text!r} has an empty entry; write whole numbers separated by commas, "
                           "e.g. --seeds 0,1,2")
    seeds = []
    for item in items:
        if not re.fullmatch(r"\d+", item):
            raise RobevalError(f"--seeds: {item!r} is not a whole number >= 0; write e.g. --seeds 0,1,2")
        seeds.append(int(item))
    _check_unique(seeds, items, what="--seeds")
    return tuple(seeds)


def parse_axis(text: str) -> SweepAxis:
    """``"KEY=V1|V2"`` -> the field KEY stands for and its typed values (see module doc)."""
    key, eq, rest = text.partition("=")
    if not eq or not key.strip():
        raise RobevalError(f"--sweep {text!r} must be KEY=V1|V2|..., e.g. --sweep lr=0.01|0.1 or "
                           "--sweep regulariser=absum:lambda=0.01|0.1|1")
    name = sweep_field(key)
    texts = _expand(rest.split("|"), text)
    kind = typing.get_type_hints(TrainSpec)[name]
    values = [_coerce(name, kind, value) for value in texts]
    _check_unique(values, texts, what=f"--sweep {key.strip()}")
    return SweepAxis(name, tuple(values), tuple(texts))


def sweep_field(key: str) -> str:
    """The TrainSpec field of a ``--sweep`` KEY (field or flag spelling)."""
    name = key.strip().lstrip("-").lower().replace("-", "_")
    name = ALIASES.get(name, name)
    known = [f.name for f in fields(TrainSpec)]
    if name in NOT_SWEPT:
        raise RobevalError(f"--sweep cannot vary {key.strip()!r}: {NOT_SWEPT[name]}")
    if name not in known:
        allowed = sorted({*known, "regulariser"} - {"regularisers", *NOT_SWEPT})
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RobevalError(f"--sweep: unknown setting {key.strip()!r}; {hint}sweepable: {', '.join(allowed)}")
    return name


def check_flags(given: Iterable[str], axes: Sequence[SweepAxis], *, seeds: bool) -> None:
    """Refuse a setting given both as a flag (``given``: field names) and by a sweep."""
    given = set(given)
    if seeds and "seed" in given:
        raise RobevalError("give --seed (one training) or --seeds (a sweep), not both")
    seen: set[str] = set()
    for axis in axes:
        if axis.field in seen:
            raise RobevalError(f"--sweep varies {axis.field} twice; list all its values in one --sweep")
        seen.add(axis.field)
        if axis.field in given:
            flag = "--regulariser" if axis.field == "regularisers" else "--" + axis.field.replace("_", "-")
            raise RobevalError(f"{flag} and --sweep {axis.field}=... both set {axis.field}; drop one")


def combinations(base: TrainSpec, seeds: Sequence[int], axes: Sequence[SweepAxis], out: Path) -> list[Combination]:
    """Every (seed, value, ...) of the sweep in order, each with its spec writing
    ``out/NAME.pt``; every spec is built (so checked) here, before any training."""
    combos: list[Combination] = []
    for seed in seeds:
        for picks in itertools.product(*(range(len(axis.values)) for axis in axes)):
            changes = {axis.field: axis.values[i] for axis, i in zip(axes, picks, strict=True)}
            texts = tuple((axis.field, axis.texts[i]) for axis, i in zip(axes, picks, strict=True))
            name = combination_name(texts, seed)
            try:
                spec = base.replace(**changes, seed=seed, out=str(out / f"{name}.pt"))
            except RobevalError as exc:
                raise RobevalError(f"sweep combination {name}: {exc}") from None
            combos.append(Combination(name, seed, texts, spec))
    for i, combo in enumerate(combos):
        twin = next((c for c in combos[:i] if c.name == combo.name), None)
        if twin is not None:
            raise RobevalError(f"the sweep's values {dict(twin.values)} and {dict(combo.values)} both make the "
                               f"checkpoint name {combo.name!r}; write one of them differently")
    return combos


def combination_name(values: Sequence[tuple[str, str]], seed: int) -> str:
    """``(("regularisers", "absum:lambda=0.1"),), 3`` -> ``absum-lambda=0.1_seed=3``: safe
    on every file system, the same for the same values."""
    parts = [text if field in SELF_NAMED else f"{field}={text}" for field, text in values]
    name = "_".join(_UNSAFE.sub("-", part.replace(" ", "")) for part in [*parts, f"seed={seed}"])
    if len(name.encode()) > MAX_NAME:
        import hashlib

        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name.encode()[: MAX_NAME - 13].decode(errors='ignore')}-{digest}"
    return name


def _expand(items: list[str], text: str) -> list[str]:
    """The ``|`` values with the bare-value shorthand applied (see module doc)."""
    items = [item.strip() for item in items]
    if items == [""]:
        raise RobevalError(f"--sweep {text!r} gives no value; write KEY=V1|V2|..., e.g. --sweep lr=0.01|0.1")
    if "" in items:
        raise RobevalError(f"--sweep {text!r} has an empty value (value {items.index('') + 1}); "
                           "remove the extra |, e.g. --sweep lr=0.01|0.1")
    first, later = items[0], items[1:]
    if "=" in first and later and not any(c in item for item in later for c in ":=+"):
        prefix = first[: first.rindex("=") + 1]
        return [first, *(prefix + item for item in later)]
    return items


def _coerce(name: str, kind: Any, text: str) -> Any:
    """``text`` as the field's type (``kind``, from TrainSpec's annotations)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # an optional setting: X | None
        if text.lower() in ("none", "null"):
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if name == "regularisers":
        return () if text.lower() == "none" else tuple(part.strip() for part in _JOIN.split(text))
    if typing.get_origin(kind) is tuple:
        return tuple(_whole(part, name) for part in text.split(",") if part.strip())
    if kind is int:
        return _whole(text, name)
    if kind is float:
        return parse_number(text, what=f"--sweep {name} value")
    return text


def _whole(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise RobevalError(f"--sweep {name}: {text!r} is not a whole number") from None


def _check_unique(values: Sequence[Any], texts: Sequence[str], *, what: str) -> None:
    for i, value in enumerate(values):
        if value in values[:i]:
            first = texts[list(values).index(value)]
            same = f"{first!r} twice" if first == texts[i] else f"{first!r} and {texts[i]!r}, the same value"
            raise RobevalError(f"{what} lists {same}; keep one")
