"""One small registry per kind of thing (attacks, architectures, datasets, objectives...).

Names are case-insensitive; unknown names are rejected with a "did you mean" hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robeval.errors import RobevalError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories) for one kind, e.g. ``"attack"``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; duplicate names are a bug."""

        def decorator(obj: T) -> T:
            key = name.lower()
            if key in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry called ``name``; unknown names raise a :class:`RobevalError`."""
        key = name.lower()
        if key in self._entries:
            return self._entries[key]
        raise RobevalError(unknown_name_message(self.kind, name, self.names()))

    def unregister(self, name: str) -> T:
        """Remove and return an entry (for tests and plug-in reloading)."""
        return self._entries.pop(name.lower())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def unknown_name_message(kind: str, name: str, known: list[str], *, see_also: bool = True) -> str:
    """``unknown attack 'pdg'; did you mean 'pgd'? (see `robeval ls attacks`)``."""
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = f" (known: {', '.join(known)})" if not close and len(known) <= 12 else ""
    see = f" (see `robeval ls {kind}s`)" if see_also else ""
    return f"unknown {kind} {name!r}{hint}{listing}{see}"
