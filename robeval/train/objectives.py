"""Base training objectives, one registry. Each is a frozen dataclass called as
``objective(model, x, y, *, generator) -> (loss, logits)``; ``logits`` are those of the
clean batch, for regularisers and running accuracy.

Only cross-entropy (the papers' "V"/vanilla loss) lives here so far; PGD adversarial
training, TRADES, logit pairing and the augmented variants plug into the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robeval.configs import build_config
from robeval.params import parse_named
from robeval.registry import Registry

objectives: Registry[type] = Registry("objective")


class Objective(Protocol):
    """``objective(model, x, y, *, generator) -> (loss, clean logits)``."""

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]: ...


@objectives.register("ce")
@dataclass(frozen=True, kw_only=True)
class CrossEntropy:
    """Plain cross-entropy on clean inputs (the "V" models of the smooth-kernels paper)."""

    name: ClassVar[str] = "ce"
    label_smoothing: float = 0.0

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


def get_objective(spec: str) -> Objective:
    """An objective from ``name`` or ``name:key=value,...``."""
    name, params = parse_named(spec, kind="objective")
    return build_config(objectives.get(name), params, what=f"objective {name!r}")
