"""The device batch: how many points go to the device at once, halved on out-of-memory.

The *store* batch (``--batch-size``) is the unit the result store writes, resumes and
seeds; the *device* batch is how many of its points one attack call (and one forward
pass of :func:`~robeval.eval.runner.predict`) gets. It starts at the store batch size;
a CUDA out-of-memory error frees PyTorch's cache, halves it and redoes the same chunk,
so a run that does not fit finishes instead of failing. Since every point draws from its
own random stream (:mod:`robeval.attacks.rng`), the numbers do not depend on the device
batch (up to the model's own batch invariance; AutoAttack excepted), and the size used
for each stored batch is recorded (``batch_size_used`` in ``results.csv``).

The size persists for the life of the model object, for every later chunk, batch, eps
and attack of the run: one :class:`DeviceBatch` per model, kept in a weak registry
(:func:`device_batch`), so nothing has to be threaded through the callers and a fresh
model (a new run, a Ray worker) starts at the store batch size again.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import Tensor, nn

from robeval.errors import RobevalError
from robeval.eval.counting import PassCounter

log = logging.getLogger(__name__)
Result = TypeVar("Result")


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error, as PyTorch raises it."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc))


class DeviceBatch:
    """The largest number of points one model is given at once (``None``: no limit
    found yet, the store batch size is used)."""

    def __init__(self) -> None:
        self.limit: int | None = None

    def size(self, batch_size: int) -> int:
        return batch_size if self.limit is None else max(1, min(self.limit, batch_size))

    def halve(self, size: int, exc: BaseException) -> None:
        """After running out of memory with ``size`` points: half of it from now on."""
        if size <= 1:
            raise RobevalError(
                f"the device ran out of memory even with one point at a time ({_first_line(exc)}); --batch-size "
                "was halved down to 1: free the device (other processes), use a smaller model or inputs, or run "
                "on the CPU (--device cpu)"
            ) from None
        self.limit = size // 2
        log.warning("out of device memory with %d points at once; continuing with %d (--batch-size %d would "
                    "start there)", size, self.limit, self.limit)


_REGISTRY: weakref.WeakKeyDictionary[nn.Module, DeviceBatch] = weakref.WeakKeyDictionary()


def device_batch(model: nn.Module) -> DeviceBatch:
    """The device batch of ``model`` (created at no limit on first use)."""
    found = _REGISTRY.get(model)
    if found is None:
        found = _REGISTRY[model] = DeviceBatch()
    return found


def in_device_batches(
    model: nn.Module, todo: Tensor, batch_size: int, attempt: Callable[[Tensor], Result],
) -> tuple[list[Result], int | None]:
    """``attempt(chunk)`` on consecutive chunks of ``todo`` (indices) of ``model``'s
    device batch, in order; an out-of-memory error halves the device batch and redoes
    the chunk (``attempt`` must undo its own side effects before re-raising). Returns the
    results and the smallest device batch used (``None`` when ``todo`` is empty)."""
    sizes = device_batch(model)
    results: list[Result] = []
    used: int | None = None
    start = 0
    while start < len(todo):
        size = sizes.size(batch_size)
        chunk = todo[start:start + size]
        try:
            results.append(attempt(chunk))
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            sizes.halve(size, exc)
            failed = True
        else:
            failed = False
        if failed:  # outside the except block: the traceback (and its tensors) are gone
            _free_cache()
            continue
        used = size if used is None else min(used, size)
        start += len(chunk)
    return results, used


@contextmanager
def undone_on_error(counter: PassCounter) -> Iterator[None]:
    """Passes counted inside the block are forgotten when it raises (an out-of-memory
    attempt is redone with fewer points, as if it had never run)."""
    counts = (counter.counts.forward, counter.counts.backward)
    try:
        yield
    except BaseException:
        counter.counts.forward, counter.counts.backward = counts
        raise


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["DeviceBatch", "device_batch", "in_device_batches", "is_out_of_memory", "undone_on_error"]
