"""Cells: one (model, data subset, attack, eps) combination, its cache key, and the
random streams of its points (:class:`BatchSeeds`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robeval.attacks.rng import PointGenerator

#: How the cells' random draws are seeded (in every key): one stream per point.
RNG = "per-point"


@dataclass(frozen=True)
class Cell:
    """One row of ``results.csv``; ``store_key`` names its points in the result store.

    A budgeted attack's cell depends on the smaller budgets walked before it
    (``lower_eps``): adversarials found there are reused, so the same eps reached by
    another grid is another cell. A minimal-norm attack's cells are all read off one
    unbounded search (``search()``), whatever the grid. A non-nested attack's cell
    (``nested=False``, e.g. random noise) depends on its own eps only.

    ``amp``: the precision of the model's passes (``off``: float32; ``bf16``: bfloat16
    autocast on CUDA, :mod:`robeval.eval.precision`); it changes the numbers, so it is
    part of the key (left out when ``off``). The key also names the seeding
    (:data:`RNG`): stores written with one generator per batch are never mixed with
    per-point numbers.
    """

    model: str
    model_identity: str
    dataset: str
    attack: str
    attack_params: tuple[tuple[str, Any], ...]
    norm: str
    eps: float
    n: int
    seed: int
    batch_size: int
    minimal: bool = False
    lower_eps: tuple[float, ...] = ()
    target: str | None = None
    nested: bool = True
    amp: str = "off"

    @property
    def key(self) -> str:
        """A hash of everything that determines this cell's numbers (not its display name)."""
        return _hash(self._payload())

    @property
    def rng_key(self) -> str:
        """The key without the batch size and ``amp``: what seeds the cell's points
        (:func:`point_seed`), so that their random draws, and with a batch-invariant
        model their numbers, do not depend on ``--batch-size``, and a bf16 run draws
        what the float32 run draws (the two differ by precision alone)."""
        payload = self._payload()
        payload.pop("batch_size")
        payload.pop("amp", None)
        return _hash(payload)

    def _payload(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload.pop("model")
        if self.amp == "off":
            payload.pop("amp")
        payload["eps"] = repr(float(self.eps))
        payload["lower_eps"] = [repr(float(e)) for e in self.lower_eps]
        payload["rng"] = RNG
        return payload

    def search(self) -> Cell:
        """The unbounded cell a minimal-norm attack's points are stored under."""
        return dataclasses.replace(self, eps=math.inf, lower_eps=())

    @property
    def store_key(self) -> str:
        return self.search().key if self.minimal else self.key

    @property
    def unbounded(self) -> bool:
        return math.isinf(self.eps)

    def description(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "attack_params": dict(self.attack_params)}


def batch_seed(seed: int, cell_key: str, batch: int) -> int:
    """A 63-bit seed for one batch of one cell, stable across runs and resumes: the
    stream of code that draws for a whole batch (AutoAttack, plug-in attacks)."""
    return _seed(f"{seed}:{cell_key}:{batch}")


def point_seed(seed: int, rng_key: str, idx: int, target: int) -> int:
    """A 63-bit seed for one point (sample ``idx``, ``target``; -1 untargeted) of one
    cell (its :attr:`Cell.rng_key`): the point's own random stream
    (:class:`robeval.attacks.rng.PointGenerator`), whatever batch it is attacked in."""
    return _seed(f"{seed}:{rng_key}:{idx}:{target}")


def _seed(text: str) -> int:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _hash(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class BatchSeeds:
    """The random streams of one batch of one cell: a seed per point (from the run seed,
    the cell's :attr:`~Cell.rng_key`, the point's sample and target,
    :func:`~robeval.eval.cells.point_seed`) and one whole-batch stream (``base``, seeded
    per cell and batch, for attacks that draw per call: AutoAttack, plug-ins)."""

    points: tuple[int, ...]
    base: torch.Generator

    @classmethod
    def of(cls, cell: Cell, batch: int, idx: Tensor, target: Tensor) -> BatchSeeds:
        key = cell.rng_key
        seeds = tuple(point_seed(cell.seed, key, i, t) for i, t in zip(idx.tolist(), target.tolist(), strict=True))
        return cls(seeds, torch.Generator().manual_seed(batch_seed(cell.seed, cell.key, batch)))

    def generator(self, rows: Tensor) -> PointGenerator:
        """The generator of the points ``rows``, its whole-batch stream where ``base`` is now."""
        generator = PointGenerator([self.points[i] for i in rows.tolist()])
        generator.set_state(self.base.get_state())
        return generator

    def advance(self, used: PointGenerator) -> None:
        """After a device batch that went through: ``base`` continues where ``used`` stopped."""
        self.base.set_state(used.get_state())
