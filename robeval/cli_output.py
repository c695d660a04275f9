"""What the command line prints besides its tables: one-line errors and warnings.

:func:`user_errors` wraps every command body: a :class:`RobevalError`, a full disk, a
read-only place or a damaged result store print one ``error: ...`` line and exit 2; Ctrl-C
prints one line and exits 130. :func:`setup_output` makes ``warnings.warn`` and logging
WARNING/ERROR records one ``warning: ...`` line each (INFO records, with ``--verbose``,
keep their ``INFO logger: message`` form).
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import typer
from rich.console import Console
from rich.markup import escape

from robeval.errors import RobevalError
from robeval.failures import describe_failure

out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

INTERRUPTED = "interrupted"
INTERRUPTED_RESUMABLE = "interrupted; finished batches are saved, run the same command again to resume"
INTERRUPTED_TRAINING = (
    "interrupted; finished epochs are kept in the checkpoint's .resume file, run the same command again to resume"
)
#: What Ctrl-C tells the user, per command that keeps its finished work (others: INTERRUPTED).
RESUMABLE = {"run": INTERRUPTED_RESUMABLE, "transfer": INTERRUPTED_RESUMABLE, "train": INTERRUPTED_TRAINING}


@dataclass
class CliState:
    """What the app callback learnt about this invocation."""

    verbose: bool = False
    computes: bool = False  # the command computes (threads are set, Ctrl-C says how to resume)
    command: str | None = None  # the invoked subcommand
    threads: int | None = None  # --threads
    threads_pending: bool = False
    interrupt_reported: bool = False


state = CliState()


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, one line."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def print_warning(message: str) -> None:
    """``warning: MESSAGE`` on stderr."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def report_interrupt() -> None:
    """The one line printed for Ctrl-C (once per process)."""
    if not state.interrupt_reported:
        state.interrupt_reported = True
        message = RESUMABLE.get(state.command or "", INTERRUPTED) if state.computes else INTERRUPTED
        err_console.print(message, highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Run a command body: user errors and failures of the disk become one line and exit
    status 2, Ctrl-C one line and 130; anything else propagates (a bug: see
    :mod:`robeval.entry`). Sets torch's thread count first for computing commands."""
    sharing = state.threads_pending
    try:
        if sharing:
            state.threads_pending = False
            from robeval.threads import configure_threads

            configure_threads(state.threads)
        yield
    except RobevalError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        report_interrupt()
        raise typer.Exit(130) from None
    except (OSError, sqlite3.DatabaseError) as exc:
        message = describe_failure(exc)
        if message is None:
            raise
        if state.verbose:
            traceback.print_exc()
        print_error(message)
        raise typer.Exit(2) from None
    finally:
        if sharing:
            from robeval.threads import stop_sharing

            stop_sharing()


class OneLineHandler(logging.Handler):
    """Log records for the user: WARNING and above as ``warning: message`` (their
    traceback only with ``--verbose``), lower levels as ``LEVEL logger: message``."""

    _verbose_format = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                print_warning(record.getMessage())
                if record.exc_info and state.verbose:
                    err_console.print("".join(traceback.format_exception(*record.exc_info)), markup=False,
                                      highlight=False)
            else:
                err_console.print(self._verbose_format.format(record), markup=False, highlight=False)
        except Exception:  # never let printing a log line end the command
            self.handleError(record)


_handler = OneLineHandler()


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.warn`` as one line for the user (``warning: ...``), not a source
    excerpt; library deprecation notices only with ``--verbose``."""
    if issubclass(category, DeprecationWarning | FutureWarning) and not state.verbose:
        return
    print_warning(str(message))


def setup_output(verbose: bool) -> None:
    """Route warnings and log records through the one-line forms (see the module
    docstring); ``verbose`` adds INFO records and tracebacks."""
    state.verbose = verbose
    warnings.showwarning = show_warning
    root = logging.getLogger()
    _handler.setLevel(logging.INFO if verbose else logging.WARNING)
    if _handler not in root.handlers:
        root.addHandler(_handler)
    if verbose and (root.level == logging.NOTSET or root.level > logging.INFO):
        root.setLevel(logging.INFO)
