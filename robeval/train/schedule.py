"""Learning-rate schedules, as a pure function of the optimiser step."""

from __future__ import annotations

import math

from robeval.train.spec import TrainSpec


def lr_at(spec: TrainSpec, step: int, steps_per_epoch: int) -> float:
    """The learning rate for optimiser step ``step`` (0-based).

    Linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_epochs``, then
    ``constant``; ``step``: times ``lr_decay`` for every milestone epoch reached; or
    ``cosine``: ``lr * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 to 1 over the
    steps after the warm-up.
    """
    warmup = spec.warmup_epochs * steps_per_epoch
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    epoch = step // steps_per_epoch
    if spec.schedule == "step":
        return spec.lr * spec.lr_decay ** sum(epoch >= m for m in spec.milestones)
    if spec.schedule == "cosine":
        total = spec.epochs * steps_per_epoch - warmup
        t = (step - warmup) / max(total, 1)
        return spec.lr * 0.5 * (1 + math.cos(math.pi * t))
    return spec.lr
