"""What an iterative attack saw along its path, recorded for the attack-failure indicators.

The runner opens a :func:`tracing` context around each attack call; an iterative attack
reports, at every step, the loss it ascends and whether each iterate was already
adversarial, computed from the forward pass it makes anyway (no extra passes). Outside a
``tracing`` context :func:`record_step` does nothing, so attacks (and plug-ins that never
call it) cost nothing extra.

Two indicators read the trace (Pintor et al., "Indicators of Attack Failure", NeurIPS
2022, Sec. 3): *silent success* (an iterate along the path was adversarial but the
returned point is not) and *incomplete optimisation* (the loss of the points the attack
failed on was still rising over its last steps).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

MAX_STEPS = 2048  # a longer path is thinned to every other step, so memory stays bounded
_ACTIVE: ContextVar[PathTrace | None] = ContextVar("robeval_path_trace", default=None)


@dataclass
class PathTrace:
    """The steps of one attack call on ``n`` points (rows of the ``x`` it was given).

    Each step holds the rows it iterated (a restart or a shrinking active set iterates a
    subset), their loss (the attack's own objective, which it ascends) and whether each
    iterate was adversarial. ``runs`` counts calls of :meth:`new_run` (restarts): only
    the latest run of a row counts for the loss trend.
    """

    n: int
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = field(default_factory=list)
    runs: int = 0
    seen: np.ndarray | None = None  # per row: some recorded iterate was adversarial

    def new_run(self) -> None:
        """Mark the start of another run (a restart from a fresh start)."""
        self.runs += 1

    def record(self, rows: Tensor, loss: Tensor, adversarial: Tensor) -> None:
        step = (
            rows.detach().cpu().numpy().astype(np.int64),
            loss.detach().double().cpu().numpy().reshape(-1),
            adversarial.detach().cpu().numpy().astype(bool).reshape(-1),
            self.runs,
        )
        if self.seen is None:
            self.seen = np.zeros(self.n, dtype=bool)
        self.seen[step[0][step[2]]] = True
        self.steps.append(step)
        if len(self.steps) > 2 * MAX_STEPS:  # long searches (C&W): keep every other step
            self.steps = self.steps[1::2]

    def seen_adversarial(self) -> np.ndarray:
        """Per row: some recorded iterate was adversarial (every step counts, also those
        thinned out of a long path)."""
        return np.zeros(self.n, dtype=bool) if self.seen is None else self.seen.copy()

    def loss_curves(self) -> list[np.ndarray]:
        """Per row, the losses of its latest run in step order (empty where never traced)."""
        latest = np.full(self.n, -1)
        for rows, _, _, run in self.steps:
            latest[rows] = np.maximum(latest[rows], run)
        curves: list[list[float]] = [[] for _ in range(self.n)]
        for rows, loss, _, run in self.steps:
            for row, value in zip(rows[latest[rows] == run], loss[latest[rows] == run], strict=True):
                curves[int(row)].append(float(value))
        return [np.asarray(c, dtype=np.float64) for c in curves]


def loss_trend(curve: np.ndarray) -> float:
    """How much the loss still rose at the end of a path: the mean of its last quarter
    minus the mean of the quarter before, relative to the range the loss covered
    (``NaN`` for paths of fewer than 4 steps, 0 for a flat one). A converged ascent gives
    about 0 (or less, when it oscillates around a maximum); a value near 1 means most of
    the progress came at the very end, so more steps would have helped (Pintor et al.
    2022, Sec. 3, "incomplete optimization")."""
    curve = np.asarray(curve, dtype=np.float64)
    curve = curve[np.isfinite(curve)]
    if len(curve) < 4:
        return float("nan")
    q = max(1, len(curve) // 4)
    spread = float(curve.max() - curve.min())
    if spread <= 1e-12:
        return 0.0
    return float((curve[-q:].mean() - curve[-2 * q:-q].mean()) / spread)


@contextmanager
def tracing(n: int) -> Iterator[PathTrace]:
    """Record the path of the attack calls made inside the block (on ``n`` points)."""
    trace = PathTrace(n)
    token = _ACTIVE.set(trace)
    try:
        yield trace
    finally:
        _ACTIVE.reset(token)


def active_trace() -> PathTrace | None:
    """The trace being recorded, if any (attacks call :func:`record_step` instead)."""
    return _ACTIVE.get()


def record_step(rows: Tensor | None, loss: Tensor, adversarial: Tensor) -> None:
    """Report one step of an iterative attack: ``loss`` (per point, the objective it
    ascends) and ``adversarial`` (per point, whether this iterate already fools the model)
    for the points ``rows`` of the call's input (``None``: all of them, in order)."""
    trace = _ACTIVE.get()
    if trace is None:
        return
    if rows is None:
        rows = torch.arange(trace.n)
    trace.record(rows, loss, adversarial)


def new_run() -> None:
    """Report the start of a restart (a fresh run over some of the points)."""
    trace = _ACTIVE.get()
    if trace is not None:
        trace.new_run()
