"""Cells: one (model, data subset, attack, eps) combination and its cache key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cell:
    """One row of ``results.csv``; ``store_key`` names its points in the result store.

    A budgeted attack's cell depends on the smaller budgets walked before it
    (``lower_eps``): adversarials found there are reused, so the same eps reached by
    another grid is another cell. A minimal-norm attack's cells are all read off one
    unbounded search (``search()``), whatever the grid. A non-nested attack's cell
    (``nested=False``, e.g. random noise) depends on its own eps only.
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

    @property
    def key(self) -> str:
        """A hash of everything that determines this cell's numbers (not its display name)."""
        payload = dataclasses.asdict(self)
        payload.pop("model")
        payload["eps"] = repr(float(self.eps))
        payload["lower_eps"] = [repr(float(e)) for e in self.lower_eps]
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

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
    """A 63-bit seed for one batch of one cell, stable across runs and resumes."""
    digest = hashlib.sha256(f"{seed}:{cell_key}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
