"""The ``robeval`` console script and ``python -m robeval``.

The command line is imported inside the handlers, so Ctrl-C at any moment, even while
torch is still loading, ends with one line and exit status 130, never a traceback; a
second Ctrl-C ends the process at once. The safety net: an error of the disk or of a
result store that no command turned into a user error prints one line and exits 2
(:mod:`robeval.failures`); any other exception is a bug, printed as one line that says
so and exits 1, with its traceback under ``--verbose``.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any, NoReturn

_interrupts = 0


def _on_interrupt(signum: int, frame: Any) -> None:
    """SIGINT: the first raises KeyboardInterrupt (handled where it lands), a second one
    ends the process at once, whatever cleanup it was in."""
    global _interrupts
    _interrupts += 1
    if _interrupts > 1:
        os._exit(130)
    raise KeyboardInterrupt


def _exit_now(signum: int, frame: Any) -> None:
    os._exit(130)


def _say(line: str) -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _verbose(args: list[str]) -> bool:
    try:
        from robeval.cli_output import state

        if state.verbose:
            return True
    except Exception:  # the command line did not even import
        pass
    return "--verbose" in args or "-v" in args


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    _say(str(exc.code))
    return 1


def run(args: list[str]) -> int:
    """Run the command line on ``args`` and return its exit status."""
    try:
        from robeval.cli import app
        from robeval.cli_output import state
    except KeyboardInterrupt:
        _say("interrupted")
        os._exit(130)  # half-imported modules: skip their cleanup
    state.verbose = state.interrupt_reported = False  # set again by the app's callback
    try:
        app(args=args)
        return 0
    except SystemExit as exc:
        code = _exit_code(exc)
        if code == 130 and not state.interrupt_reported:
            _say("interrupted")
        return code
    except KeyboardInterrupt:
        if not state.interrupt_reported:
            _say("interrupted")
        return 130
    except Exception as exc:
        return _unexpected(exc, args)


def _unexpected(exc: Exception, args: list[str]) -> int:
    from robeval.failures import describe_failure

    verbose = _verbose(args)
    if verbose:
        traceback.print_exc()
    message = describe_failure(exc)
    if message is not None:
        _say(f"error: {message}")
        return 2
    text = " ".join(str(exc).split()) or "no message"
    hint = "the traceback is above" if verbose else "rerun with --verbose for the traceback"
    _say(f"error: unexpected {type(exc).__name__} ({text}); this is a robeval bug: {hint} and report it")
    return 1


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: ``robeval ARGS`` (``argv`` defaults to ``sys.argv[1:]``)."""
    try:
        signal.signal(signal.SIGINT, _on_interrupt)
    except ValueError:  # not the main thread
        pass
    try:
        code = run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        _say("interrupted")
        code = 130
    try:
        signal.signal(signal.SIGINT, _exit_now)  # Ctrl-C during shutdown: no traceback either
    except ValueError:
        pass
    sys.exit(code)
