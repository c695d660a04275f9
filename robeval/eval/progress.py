"""Progress bars (rich) that cost nothing when disabled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


class _Silent:
    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def silent_bar() -> Any:
    """A progress bar that shows nothing (same methods as rich's)."""
    return _Silent()


@contextmanager
def progress_bar(*, enabled: bool) -> Iterator[Any]:
    """A rich :class:`Progress` on stderr, or a no-op stand-in."""
    if not enabled:
        yield _Silent()
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        yield bar
