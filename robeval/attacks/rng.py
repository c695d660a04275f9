"""Per-point randomness: a point's random draws do not depend on the other points that
share its device batch, so the numbers do not depend on the batch size.

A random attack (PGD's random start, the noise attacks, salt-and-pepper) drawing one
tensor of shape ``(batch, ...)`` from one generator gives point ``i`` the values that
follow the draws of points ``0 .. i-1``: change the batch size (or halve it after a CUDA
out-of-memory error) and every point gets other noise. :class:`PointGenerator` holds
one ``torch.Generator`` per point (row), each seeded from the point alone (the runner
seeds it from the run seed, the cell and the point's index and target,
:func:`robeval.eval.cells.point_seed`); the draw helpers here (:func:`rand`,
:func:`randn`) give row ``i`` of a draw from row ``i``'s generator. A point's stream is
then a function of the point, not of the schedule: the argument Salmon et al. make for
counter-based generators ("Parallel random numbers: as easy as 1, 2, 3", SC 2011).

A :class:`PointGenerator` *is* a ``torch.Generator`` (seeded per cell and batch, as
``robeval run`` seeded its one generator before), so an attack that knows nothing of
points (a plug-in calling ``torch.rand(shape, generator=generator)``, AutoAttack's seed)
still works, only with numbers that can depend on the device batch. A plain
``torch.Generator`` or ``None`` given to the helpers draws exactly as ``torch.rand`` /
``torch.randn`` with that generator would (same values, same order), so library users and
the training objectives see no change.

Drawing per row costs one small ``torch.rand`` call per point per draw on the CPU; the
helpers take that path only for a :class:`PointGenerator`, and attacks that draw many
times per point take their draws in blocks (:class:`PointDraws`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class PointGenerator(torch.Generator):
    """One ``torch.Generator`` per point (``rows``), and itself a ``torch.Generator``
    seeded with ``base_seed`` for code that draws without knowing the points.

    ``generator[rows]`` is the generator of a subset of the points (e.g. those still
    attacked by a PGD restart): it shares the points' generators, so drawing through it
    advances their streams exactly as drawing through the whole would.
    """

    rows: tuple[torch.Generator, ...]

    def __new__(cls, seeds: Sequence[int] = (), base_seed: int = 0) -> PointGenerator:
        return super().__new__(cls)

    def __init__(self, seeds: Sequence[int] = (), base_seed: int = 0) -> None:
        self.manual_seed(int(base_seed))
        self.rows = tuple(torch.Generator().manual_seed(int(s)) for s in seeds)

    @classmethod
    def of_rows(cls, rows: Sequence[torch.Generator], base: torch.Generator) -> PointGenerator:
        """The generator of ``rows`` (shared, not copied); its own stream starts as ``base``'s now is."""
        out = cls()
        out.set_state(base.get_state())
        out.rows = tuple(rows)
        return out

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows: Tensor | Sequence[int] | slice) -> PointGenerator:
        if isinstance(rows, slice):
            return self.of_rows(self.rows[rows], self)
        picked = rows.detach().cpu().tolist() if isinstance(rows, Tensor) else list(rows)
        return self.of_rows([self.rows[int(i)] for i in picked], self)

    def __repr__(self) -> str:
        return f"PointGenerator({len(self.rows)} points, base seed {self.initial_seed()})"


Generator = torch.Generator | None


def take(generator: Generator, rows: Tensor) -> Generator:
    """The generator for the points ``rows`` of a call's input: the subset of a
    :class:`PointGenerator`, any other generator unchanged (it draws for whatever shape
    it is asked)."""
    return generator[rows] if isinstance(generator, PointGenerator) else generator


def rand(shape: Sequence[int], generator: Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """``U[0, 1)`` of ``shape`` on the CPU: ``torch.rand(shape, generator=generator)``, or
    for a :class:`PointGenerator` row ``i`` from the ``i``-th point's generator
    (``shape[0]`` must then be the number of points)."""
    return _draw(torch.rand, shape, generator, dtype)


def randn(shape: Sequence[int], generator: Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """``N(0, 1)`` of ``shape`` on the CPU, per point for a :class:`PointGenerator` (see :func:`rand`)."""
    return _draw(torch.randn, shape, generator, dtype)


class PointDraws:
    """The draws of many samples per point, ``block`` at a time: point ``i``'s draws
    come from one ``sample(block, generator_i)`` call per ``block`` draws (shape
    ``(block, ...)``), handed out in order as they are asked for. A point's ``k``-th
    draw is thus fixed by its stream and ``block`` alone, whatever batches and chunks it
    is asked in; ``block`` must not depend on the batch. Spares the noise attacks one
    small CPU call per point per draw (:mod:`robeval.attacks.noise`)."""

    def __init__(self, generator: PointGenerator, sample: Callable[[int, torch.Generator], Tensor],
                 block: int) -> None:
        self.generator, self.sample, self.block = generator, sample, max(1, int(block))
        self._left: list[Tensor | None] = [None] * len(generator)  # drawn, not handed out yet

    def take(self, rows: Sequence[int], count: int) -> Tensor:
        """The next ``count`` draws of each point of ``rows``, ``(count, len(rows), ...)``."""
        return torch.stack([self._next(int(row), count) for row in rows], dim=1)

    def _next(self, row: int, count: int) -> Tensor:
        parts, need = [], count
        while need > 0:
            left = self._left[row]
            if left is None or len(left) == 0:
                left = self.sample(self.block, self.generator.rows[row])
            parts.append(left[:need])
            need -= len(parts[-1])
            self._left[row] = left[len(parts[-1]):]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _draw(sampler: object, shape: Sequence[int], generator: Generator, dtype: torch.dtype) -> Tensor:
    shape = tuple(int(s) for s in shape)
    if not isinstance(generator, PointGenerator):
        return sampler(shape, generator=generator, dtype=dtype)  # type: ignore[operator]
    if not shape or shape[0] != len(generator):
        raise ValueError(f"a draw of shape {shape} for {len(generator)} points: the first dimension must be "
                         "the number of points")
    if not generator.rows:
        return torch.empty(shape, dtype=dtype)
    return torch.stack([sampler(shape[1:], generator=g, dtype=dtype) for g in generator.rows])  # type: ignore[operator]


__all__ = ["PointDraws", "PointGenerator", "rand", "randn", "take"]
