"""The models a Ray worker evaluates, loaded once per worker process.

A task names its model by the source the user gave (absolute paths: the spec's
``portable()`` form), the source context, the BPDA modules the driver applied and the
identity the driver computed. The worker loads it the first time (later tasks of the
same process reuse it) and refuses to go on when the identity differs, e.g. a checkpoint
overwritten while the run was going: its rows would not be the cells' numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from robeval.errors import RobevalError
from robeval.models.sources import SourceContext

#: Per worker process: models by reference (a worker runs one task at a time).
_CACHE: dict[ModelRef, nn.Module] = {}


@dataclass(frozen=True)
class ModelRef:
    """How a worker loads one model of the run, and the identity it must have."""

    source: str
    identity: str
    name: str
    context: SourceContext
    bpda: tuple[str, ...]
    device: str


def worker_model(ref: ModelRef) -> nn.Module:
    """The model of ``ref`` (in eval mode), from this worker's cache or loaded now."""
    model = _CACHE.get(ref)
    if model is None:
        model = _load(ref)
        _CACHE[ref] = model
    return model


def _load(ref: ModelRef) -> nn.Module:
    import torch

    from robeval.models import load_model
    from robeval.models.bpda import apply_bpda

    loaded = load_model(ref.source, device=torch.device(ref.device), context=ref.context)
    applied = apply_bpda(loaded.model, ref.bpda) if ref.bpda else []
    identity = f"{loaded.identity}+bpda:{','.join(sorted(applied))}" if applied else loaded.identity
    if identity != ref.identity:
        raise RobevalError(
            f"model {ref.name!r} ({ref.source}) is not the model the run started with (identity {identity} on the "
            f"worker, {ref.identity} in the driver): it changed on disk, or the cluster's machines hold different "
            "files; give every machine the same file and run again"
        )
    return loaded.model


def clear_cache() -> None:
    """Forget the loaded models (tests)."""
    _CACHE.clear()
