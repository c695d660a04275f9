"""Run the ``robeval`` command line with a fault injected: ``kill -9`` of the process after
N stored batches. Used by the resume tests as ``python -m tests.fault_injection N ARGS...``;
the fault lives here, in the tests, not in the runner."""

from __future__ import annotations

import os
import signal
import sys

from robeval.results.store import ResultStore


def kill_after(batches: int) -> None:
    """Patch the store so that the process SIGKILLs itself right after the N-th stored batch."""
    original = ResultStore.write_batch
    stored = 0

    def write_then_maybe_die(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal stored
        original(self, *args, **kwargs)
        stored += 1
        if stored >= batches:
            os.kill(os.getpid(), signal.SIGKILL)

    ResultStore.write_batch = write_then_maybe_die  # type: ignore[method-assign]


if __name__ == "__main__":
    kill_after(int(sys.argv[1]))
    sys.argv = ["robeval", *sys.argv[2:]]
    from robeval.cli import main

    main()
