"""The Typer app class of the command line, whose ``--help`` shows flags as flags: Typer
renders every option's type (``<int>``, ``<str>``), so ``--quiet``, ``--verbose`` and
``--help`` itself would read ``<bool>`` as if they took a value."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


class _FlagsAsFlags:
    """Give boolean flags an empty metavar, so the help's type column is blank for them."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Command(_FlagsAsFlags, TyperCommand):
    """A command whose flags show no ``<bool>``."""


class Group(_FlagsAsFlags, TyperGroup):
    """The top-level group, whose flags (``--verbose``, ``--help``) show no ``<bool>``."""


class App(typer.Typer):
    """``typer.Typer`` whose commands default to :class:`Command`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(self, *args: Any, cls: type | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or Command, **kwargs)
