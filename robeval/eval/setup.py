"""What every evaluation does before attacking: load the models and the seeded test
subset, and check that they fit each other (one clear error per misfit)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from robeval.attacks import attacks
from robeval.attacks import get as get_attack
from robeval.attacks.base import is_gradient_free
from robeval.data import load_dataset, subset_indices
from robeval.errors import RobevalError
from robeval.eval.device_batch import in_device_batches
from robeval.eval.runner import eval_mode
from robeval.models import LoadedModel

log = logging.getLogger(__name__)


def check_black_box(item: LoadedModel, name: str, attack_specs: Sequence[str]) -> None:
    """A model without gradients (ONNX run by onnxruntime) takes gradient-free attacks only."""
    if not item.black_box:
        return
    needing = [text for text in attack_specs if not is_gradient_free(get_attack(text))]
    if needing:
        free = sorted(n for n, cls in attacks.items() if is_gradient_free(cls))
        raise RobevalError(
            f"model {name!r} is a black box (no gradients), so {', '.join(needing)} cannot run on it; "
            f"use gradient-free attacks ({', '.join(free)}) or a source that gives gradients"
        )


def display_names(loaded: Sequence[LoadedModel]) -> list[str]:
    """Short names (checkpoint stems), falling back to the full source where they clash."""
    names = [item.name for item in loaded]
    return [item.name if names.count(item.name) == 1 else item.source for item in loaded]


def resolve_dataset(dataset: str | None, loaded: Sequence[LoadedModel]) -> str:
    """``dataset`` if given, else the one data set every model records."""
    if dataset is not None:
        return dataset
    recorded = {item.meta.dataset for item in loaded if item.meta is not None}
    if len(recorded) == 1 and all(item.meta is not None for item in loaded):
        return recorded.pop()
    raise RobevalError(
        "cannot tell which data set to evaluate on (the models record "
        f"{sorted(recorded) or 'none'}); pass --dataset NAME (see `robeval ls datasets`)"
    )


def load_subset(dataset: str, n: int, seed: int, data_root: str | None) -> tuple[Tensor, Tensor, Tensor]:
    """The seeded test subset and, for each of its images, the position in the test split."""
    x_all, y_all = load_dataset(dataset, split="test", root=data_root)
    if n > len(y_all):
        log.warning("--n %d is larger than the %d test images of %s; using all", n, len(y_all), dataset)
        n = len(y_all)
    index = subset_indices(len(y_all), n, seed, what=f"{dataset} test split")
    return x_all[index].contiguous(), y_all[index].contiguous(), index


def check_input_shape(item: LoadedModel, name: str, shape: tuple[int, ...]) -> None:
    """The input shape a checkpoint records must be the data set's."""
    if item.meta is not None and tuple(item.meta.input_shape) != tuple(shape):
        raise RobevalError(
            f"model {name!r} was trained on inputs of shape {tuple(item.meta.input_shape)} but the "
            f"data set gives {tuple(shape)}; pass the matching --dataset"
        )


def check_forward(
    item: LoadedModel, name: str, x: Tensor, n_classes: int, device: torch.device, *, batch_size: int = 250,
) -> None:
    """One clear error when a model cannot take this data set's images or labels, or
    returns NaN or inf logits on some of the test images ``x`` (their predictions, and
    every accuracy counted from them, would be arbitrary)."""
    try:
        with torch.no_grad(), eval_mode(item.model):
            logits = item.model(x[:2].to(device))
    except RuntimeError as exc:
        raise RobevalError(
            f"model {name!r} cannot take inputs of shape {tuple(x.shape[1:])} ({str(exc).splitlines()[0]}); "
            "pass the matching --dataset"
        ) from None
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] < n_classes:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise RobevalError(
            f"model {name!r} gives outputs of shape {shape} but the data set has "
            f"{n_classes} classes; pass the matching --dataset"
        )
    bad = nonfinite_images(item.model, x, batch_size, device)
    if bad:
        raise RobevalError(
            f"model {name!r} returns non-finite logits (NaN/inf) for {bad} of {len(x)} test images, so its "
            "predictions there (and every accuracy) would be arbitrary; fix the model or its input normalisation "
            "(robeval gives models [0, 1] images)"
        )


def nonfinite_images(model: torch.nn.Module, x: Tensor, batch_size: int, device: torch.device) -> int:
    """How many images of ``x`` get a row of logits with a NaN or inf (in device batches
    of at most ``batch_size``, halved on out-of-memory as the attacks' are,
    :mod:`robeval.eval.device_batch`)."""
    def bad_rows(rows: Tensor) -> int:
        logits = model(x[int(rows[0]):int(rows[-1]) + 1].to(device))
        return int((~torch.isfinite(logits)).flatten(1).any(1).sum())

    with torch.no_grad(), eval_mode(model):
        counts, _ = in_device_batches(model, torch.arange(len(x)), batch_size, bad_rows)
    return sum(counts)
