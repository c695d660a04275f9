"""Torch's CPU thread count when several robeval processes share the cores.

Each torch process starts one thread per core; two of them on the same cores spin against
each other (measured on 2 cores, 3 epochs of PGD training on digits: 2 s alone, 15-38 s
each beside a twin, 3.3 s each with one thread apiece). A command that computes therefore registers its
process in a small run registry (one ``PID.pid`` file per process under
``CACHE/running``, see :func:`robeval.data.cache.cache_dir`), counts the other live
robeval processes and, when there are any, gives torch ``cores // (others + 1)`` threads
(at least 1), with one warning line. While the command runs, the count is checked again
every few seconds (from a forward pre-hook on every module, so between two torch ops of
the computing thread): a process that started alone gives up threads when a second one
starts, and takes them back when it ends. ``ROBEVAL_THREADS`` (or ``robeval --threads
N``) sets the count outright; a set ``OMP_NUM_THREADS`` is left to torch. Files of dead
processes (``kill -9``) are removed by whoever finds them; a reused pid is told apart by
its start time.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from pathlib import Path
from typing import Any

from robeval.errors import RobevalError

log = logging.getLogger(__name__)

ENV_VAR = "ROBEVAL_THREADS"
#: seconds between two checks of the registry while a command runs
RECHECK_SECONDS = 3.0
#: torch's thread count before robeval changed it (the process's first call).
_torch_default: int | None = None
_shared: dict[str, Any] = {"hook": None, "next": 0.0, "directory": None, "warned": False}
_registered: set[Path] = set()


def registry_dir() -> Path:
    """The folder of the run registry (not created here)."""
    from robeval.data.cache import cache_dir

    return cache_dir() / "running"


def start_stamp(pid: int) -> str | None:
    """The start time of process ``pid`` (``/proc/PID/stat`` field 22), ``"zombie"`` for
    a finished process not yet reaped, or None where ``/proc`` cannot tell."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    return "zombie" if fields[0] in ("Z", "X") else fields[19]


def is_alive(pid: int, stamp: str | None) -> bool:
    """Whether process ``pid`` runs and, where ``stamp`` is known, is the same process
    that registered (not a later one given the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except OSError:
        return False
    now = start_stamp(pid)
    if now == "zombie":
        return False
    return not stamp or now is None or now == stamp


def register(directory: Path | None = None) -> Path | None:
    """Add this process to the registry (removed again at exit); None when the registry
    cannot be written (then this process is simply not counted by others)."""
    folder = directory if directory is not None else registry_dir()
    path = folder / f"{os.getpid()}.pid"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(start_stamp(os.getpid()) or "")
    except OSError as exc:
        log.info("cannot register in %s (%s); other robeval processes will not count this one", folder, exc)
        return None
    if path not in _registered:
        _registered.add(path)
        atexit.register(_unregister, path)
    return path


def _unregister(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def count_others(directory: Path | None = None) -> int:
    """The live robeval processes in the registry other than this one; files of dead
    processes are removed."""
    folder = directory if directory is not None else registry_dir()
    try:
        entries = list(folder.glob("*.pid"))
    except OSError:
        return 0
    others = 0
    for entry in entries:
        try:
            pid = int(entry.stem)
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            stamp = entry.read_text().strip() or None
        except OSError:
            continue  # removed meanwhile by its process
        if is_alive(pid, stamp):
            others += 1
        else:
            _unregister(entry)
    return others


def explicit_threads(value: int | None = None) -> int | None:
    """The thread count the user set (``--threads``, else ``ROBEVAL_THREADS``), or None."""
    if value is None:
        text = os.environ.get(ENV_VAR, "").strip()
        if not text:
            return None
        try:
            value = int(text)
        except ValueError:
            raise RobevalError(f"{ENV_VAR}={text!r} is not a whole number; set it to a thread count >= 1 "
                               "or unset it") from None
    if value < 1:
        raise RobevalError(f"the thread count must be >= 1, not {value}; fix --threads or {ENV_VAR}")
    return value


def share(cores: int, others: int) -> int:
    """Threads for one of ``others + 1`` processes sharing ``cores``."""
    return max(1, cores // (others + 1))


def available_cores(torch_default: int) -> int:
    """The cores this process may use: its CPU affinity, at most torch's default count."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    return max(1, min(affinity, torch_default))


def configure_threads(threads: int | None = None, directory: Path | None = None) -> int | None:
    """Register this process and set torch's thread count (see the module docstring);
    until :func:`stop_sharing`, the count follows the other processes.

    Returns the count set, or None where torch's own was kept (no other robeval process,
    or ``OMP_NUM_THREADS`` set).
    """
    global _torch_default
    chosen = explicit_threads(threads)
    register(directory)
    import torch

    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    if chosen is not None:
        torch.set_num_threads(chosen)
        return chosen
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    _shared["directory"] = directory
    _shared["next"] = time.monotonic() + RECHECK_SECONDS
    if _shared["hook"] is None:
        _shared["hook"] = torch.nn.modules.module.register_module_forward_pre_hook(_recheck)
    return rebalance(directory)


def stop_sharing() -> None:
    """Stop following the other processes (the command has ended)."""
    hook = _shared["hook"]
    if hook is not None:
        hook.remove()
        _shared["hook"] = None


def _recheck(module: Any, args: Any) -> None:
    """Forward pre-hook: at most every :data:`RECHECK_SECONDS`, :func:`rebalance`."""
    now = time.monotonic()
    if now >= _shared["next"]:
        _shared["next"] = now + RECHECK_SECONDS
        rebalance(_shared["directory"])


def rebalance(directory: Path | None = None) -> int | None:
    """Give torch this process's share of the cores among the live robeval processes
    (torch's default when alone); returns the count set, None when it did not change."""
    import torch

    default = _torch_default if _torch_default is not None else torch.get_num_threads()
    others = count_others(directory)
    cores = available_cores(default)
    chosen = share(cores, others) if others else default
    current = torch.get_num_threads()
    if chosen == current:
        return None
    torch.set_num_threads(chosen)
    if others and not _shared["warned"]:
        _shared["warned"] = True
        log.warning("%d other robeval process%s running on these %d cores: this one uses %d torch thread%s "
                    "(set %s to choose)", others, "es are" if others > 1 else " is", cores, chosen,
                    "s" if chosen > 1 else "", ENV_VAR)
    else:
        log.info("%d other robeval processes: now %d torch threads", others, chosen)
    return chosen
