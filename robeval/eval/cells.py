"""Cells: one (model, data subset, attack, eps) combination and its cache key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cell:
    """One row of ``results.csv``; ``key`` names its samples in the result store."""

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

    @property
    def key(self) -> str:
        """A hash of everything that determines this cell's numbers (not its display name)."""
        payload = dataclasses.asdict(self)
        payload.pop("model")
        payload["eps"] = repr(float(self.eps))
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def description(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "attack_params": dict(self.attack_params)}


def batch_seed(seed: int, cell_key: str, batch: int) -> int:
    """A 63-bit seed for one batch of one cell, stable across runs and resumes."""
    digest = hashlib.sha256(f"{seed}:{cell_key}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
