"""What `robeval ls KIND [NAME]` shows: every registry entry with a one-line plain-text
summary and its parameters with their defaults; for one entry, its whole description."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from robeval.errors import RobevalError
from robeval.plain_text import first_sentence, one_line, paragraphs, plain
from robeval.registry import Registry, unknown_name_message
from robeval.registry_params import Param, parameters

KINDS = ("attacks", "models", "datasets", "objectives", "regularisers", "indicators")
#: "onnx:PATH[:backend=...] - an ONNX graph; ...": a model source's syntax, then its summary
_USAGE = re.compile(r"^([\w-]+:\S.*?)\s+-\s+(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Entry:
    """One registry entry as ``robeval ls`` shows it."""

    name: str
    summary: str  # one sentence, plain text
    tags: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    usage: str = ""  # how to write it, where parameters cannot be read (model sources)
    details: tuple[str, ...] = field(default=(), compare=False)  # the description's paragraphs

    @property
    def description(self) -> str:
        """Tags, summary and ``key=default`` parameters (or usage) as one line."""
        tags = f"[{', '.join(self.tags)}] " if self.tags else ""
        extra = " ".join(map(str, self.params)) or self.usage
        return f"{tags}{self.summary}" + (f" ({extra})" if extra else "")


def _text(obj: object) -> tuple[str, tuple[str, ...]]:
    """(summary, paragraphs) of an entry: its ``summary`` attribute if it has one, else
    the first sentence of its docstring."""
    parts = tuple(paragraphs(obj))
    given = getattr(obj, "summary", None)
    if isinstance(given, str) and given:
        return one_line(plain(given)), parts or (given,)
    return (first_sentence(parts[0]) if parts else ""), parts


def _entry(name: str, obj: object, tags: tuple[str, ...] = ()) -> Entry:
    summary, details = _text(obj)
    usage = ""
    match = _USAGE.match(summary)
    if match:
        usage, summary = match.group(1), first_sentence(match.group(2))
        summary = summary[:1].upper() + summary[1:]
    return Entry(name, summary, tags, tuple(parameters(obj)), usage, details)


def _attack_entry(name: str, cls: type) -> Entry:
    from robeval.attacks.base import is_gradient_free, is_minimal, is_targeted

    tags = ["minimal-norm" if is_minimal(cls) else "budgeted"] + (["targeted"] if is_targeted(cls) else [])
    tags += ["gradient-free"] if is_gradient_free(cls) else []
    return _entry(name, cls, tuple(tags))


def _registry_entries(registry: Registry, prefix: str = "") -> list[Entry]:
    return [_entry(prefix + name, obj) for name, obj in registry.items()]


def _attacks() -> list[Entry]:
    from robeval.attacks import attacks

    return [_attack_entry(name, cls) for name, cls in attacks.items()]


def _models() -> list[Entry]:
    from robeval.models import architectures, model_sources

    return _registry_entries(architectures) + _registry_entries(model_sources, prefix="source: ")


def _datasets() -> list[Entry]:
    from robeval.data import datasets

    return _registry_entries(datasets)


def _objectives() -> list[Entry]:
    from robeval.train import objectives

    return _registry_entries(objectives)


def _regularisers() -> list[Entry]:
    from robeval.train import regularisers

    return _registry_entries(regularisers)


def _indicators() -> list[Entry]:
    from robeval.eval.indicators import indicators

    return [Entry(name, info.catches[:1].upper() + info.catches[1:] + ".", (info.level,),
                  details=(f"Catches: {info.catches}.", f"Fires when: {info.fires_when}.", f"Cost: {info.cost}.",
                           f"Runs with: --checks {info.level}" + (" or full." if info.level == "fast" else ".")))
            for name, info in indicators.items()]


_SOURCES: dict[str, tuple[str, Callable[[], list[Entry]]]] = {
    "attack": ("attack", _attacks), "model": ("model", _models), "architecture": ("model", _models),
    "arch": ("model", _models), "dataset": ("dataset", _datasets), "objective": ("objective", _objectives),
    "regulariser": ("regulariser", _regularisers), "regularizer": ("regulariser", _regularisers),
    "indicator": ("indicator", _indicators),
}


def _source(kind: str) -> tuple[str, Callable[[], list[Entry]]]:
    found = _SOURCES.get(kind.lower().rstrip("s"))
    if found is None:
        raise RobevalError(unknown_name_message("list", kind, list(KINDS), see_also=False))
    return found


def entries(kind: str) -> list[Entry]:
    """Every entry of ``kind`` (``attacks``, ``models``, ``datasets``, ``objectives``,
    ``regularisers`` or ``indicators``; singular or plural)."""
    return _source(kind)[1]()


def entry(kind: str, name: str) -> Entry:
    """The entry ``name`` of ``kind`` (a model source also by its bare prefix, ``onnx``)."""
    noun, source = _source(kind)
    found = {e.name.lower().removeprefix("source: "): e for e in source()}
    key = name.strip().lower().removeprefix("source:").strip().rstrip(":")
    if key in found:
        return found[key]
    raise RobevalError(unknown_name_message(noun, name, sorted(found)))


def listing(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) rows for ``kind`` (see :func:`entries`)."""
    return [(e.name, e.description) for e in entries(kind)]
