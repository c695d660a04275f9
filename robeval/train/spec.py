"""The training specification (``robeval train`` flags or a YAML file)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robeval.errors import RobevalError
from robeval.spec import check_settings, read_with_overrides

SCHEDULES = ("constant", "step", "cosine")
AUGMENTS = ("none", "crop-flip")


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a trained checkpoint (recorded inside it).

    ``objective`` names a base loss from :data:`robeval.train.objectives.objectives`
    (``ce`` here; adversarial objectives come with the training module) and
    ``regularisers`` names penalties from :data:`robeval.train.regularisers.regularisers`,
    each as ``name:key=value``.

    Learning rate: ``schedule`` ``constant``, ``step`` (multiply by ``lr_decay`` at each
    epoch in ``milestones``, e.g. the local-response-differences recipe: 0.1 at 50 and
    75 of 100) or ``cosine`` (to 0 at the last step), after ``warmup_epochs`` of linear
    warm-up. ``augment="crop-flip"``: random crop with ``crop_padding`` zero padding and
    horizontal flips (the CIFAR recipes). Activation swaps go through the architecture,
    e.g. ``arch="resnet18:activation=gelu"``.
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
    schedule: Literal["constant", "step", "cosine"] = "constant"
    milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    warmup_epochs: int = 0
    augment: Literal["none", "crop-flip"] = "none"
    crop_padding: int = 4
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
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}"),
            (0 <= self.warmup_epochs < self.epochs, f"--warmup-epochs must be in [0, epochs), got {self.warmup_epochs}"),
            (0 < self.lr_decay <= 1, f"--lr-decay must be in (0, 1], got {self.lr_decay}"),
            (all(0 < m < self.epochs for m in self.milestones), f"milestones must lie in (0, epochs), got {self.milestones}"),
            (self.crop_padding >= 0, f"--crop-padding must be >= 0, got {self.crop_padding}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RobevalError(message)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the checkpoint metadata (the display flag is left out)."""
        data = dataclasses.asdict(self)
        data.pop("progress")
        data["regularisers"] = list(self.regularisers)
        data["milestones"] = list(self.milestones)
        return data

    def replace(self, **changes: Any) -> TrainSpec:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSpec:
        """Build from plain values (a YAML recipe); lists become tuples."""
        check_settings(cls, data, "training")
        values = dict(data)
        for key in ("regularisers", "milestones"):
            if key in values and values[key] is not None:
                items = values[key] if isinstance(values[key], list | tuple) else [values[key]]
                values[key] = tuple(items)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainSpec:
        """A recipe file (``recipes/*.yaml``); ``overrides`` (non-None flags) win over it."""
        data = read_with_overrides(path, overrides, what="recipe file", flag="--recipe", example="epochs: 10")
        data.pop("notes", None)  # free text for people
        return cls.from_dict(data)
