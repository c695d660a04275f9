"""Non-finite model outputs while attacking: a model whose logits are NaN or inf on the
inputs an attack tries (its iterates, its adversarials) gives arbitrary predictions
there (``argmax`` of NaN) and NaN gradients, so the attack's number means nothing.

The clean test images are checked before any attack (:func:`robeval.eval.setup.check_forward`);
here a forward hook counts the rows of logits with a NaN or inf during each attacked
batch, the count is stored with the batch (:meth:`ResultStore.write_batch`), and every
(model, attack) with some gets a fired ``non-finite-outputs`` finding, which marks its
rows of results.csv ``unreliable``. The count lives in the store, so a rerun that
attacks nothing keeps the verdict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from robeval.eval.cells import Cell
from robeval.eval.indicators.base import Finding
from robeval.eval.indicators.catalog import NON_FINITE_OUTPUTS
from robeval.results.store import ResultStore

INDICATOR = NON_FINITE_OUTPUTS.name


class NonFiniteCounter:
    """Rows of logits with a NaN or inf that ``model`` returned since the last :meth:`take`
    (kept on the model's device: no synchronisation per forward)."""

    def __init__(self) -> None:
        self._count: Tensor | int = 0

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.dim() >= 1 and output.is_floating_point():
            bad = ~torch.isfinite(output.detach())
            self._count = self._count + (bad.flatten(1).any(1) if bad.dim() >= 2 else bad).sum()

    def take(self) -> int:
        """The count since the last call, reset to zero."""
        count, self._count = int(self._count), 0
        return count


@contextmanager
def counting_store(store: ResultStore, model: nn.Module) -> Iterator[ResultStore]:
    """``store`` as the runner sees it while attacking ``model``: every batch it writes
    carries the number of non-finite output rows the model gave since the previous one."""
    counter = NonFiniteCounter()
    handle = model.register_forward_hook(counter)
    try:
        counter.take()
        yield _CountingStore(store, counter)  # type: ignore[misc]
    finally:
        handle.remove()


class _CountingStore:
    """A :class:`ResultStore` whose ``write_batch`` also stores the non-finite count."""

    def __init__(self, store: ResultStore, counter: NonFiniteCounter) -> None:
        self._store = store
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_batch(self, *args: Any, **kwargs: Any) -> None:
        self._store.write_batch(*args, nonfinite=self._counter.take(), **kwargs)


def nonfinite_findings(
    store: ResultStore, model_name: str, attack_cells: Sequence[tuple[object, list[Cell]]],
) -> list[Finding]:
    """A fired ``non-finite-outputs`` finding for every attack of one model during which
    the model returned NaN or inf logits (none for the others)."""
    findings = []
    for _, cells in attack_cells:
        if not cells:
            continue
        rows = sum(store.nonfinite_rows(key) for key in dict.fromkeys(c.store_key for c in cells))
        if rows:
            findings.append(Finding(
                model_name, cells[0].attack, None, INDICATOR, True, float(rows), 0.0,
                f"the model returned NaN or inf logits on {rows} inputs the attack tried (its iterates or "
                "adversarials): its predictions there are arbitrary and its gradients NaN, so this number cannot "
                "be trusted; fix the model's numerics (e.g. clamp or stabilise the layer that overflows) and run "
                "again.",
                0,
            ))
    return findings
