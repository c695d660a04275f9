"""The training specification (``robeval train`` flags or a YAML file)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from robeval.errors import RobevalError


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a trained checkpoint (recorded inside it).

    ``objective`` names a base loss from :data:`robeval.train.objectives.objectives`
    (``ce`` here; adversarial objectives come with the training module) and
    ``regularisers`` names penalties from :data:`robeval.train.regularisers.regularisers`,
    each as ``name:key=value``.
    """

    dataset: str = "mnist-mini"
    arch: str = "mnist-cnn"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    objective: str = "ce"
    regularisers: tuple[str, ...] = ()
    n_train: int | None = None
    device: str = "auto"
    data_root: str | None = None
    out: str = "results/model.pt"
    progress: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.optimizer in ("adam", "sgd"), f"--optimizer must be adam or sgd, got {self.optimizer!r}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.n_train is None or self.n_train >= 1, f"--n-train must be >= 1, got {self.n_train}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RobevalError(message)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the checkpoint metadata (the display flag is left out)."""
        data = dataclasses.asdict(self)
        data.pop("progress")
        data["regularisers"] = list(self.regularisers)
        return data
